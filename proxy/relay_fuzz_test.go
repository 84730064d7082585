package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// answerConn is a fast connection reading an answer from raw, the way the
// relay reads it from a pooled hop connection, and writing to out.
func answerConn(raw string, out *bytes.Buffer) (*fastConn, *hopConn, *strings.Reader) {
	src := strings.NewReader(raw)
	fc := &fastConn{}
	fc.out.w = out
	fc.bw = bufio.NewWriterSize(&fc.out, fastWriteBuf)
	return fc, &hopConn{br: bufio.NewReaderSize(src, hopBufBytes)}, src
}

// FuzzReadAnswerHead holds the fast front's reading of an answer's head
// to http.ReadResponse's: an answer it relays, net/http must read too,
// with the same status, body framing (length or chunked) and connection
// handling; a head it reads with another framing would desynchronise the
// pooled hop connection.
func FuzzReadAnswerHead(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close, X-A\r\nX-A: 1\r\n\r\n",
		"HTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
		"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		var out bytes.Buffer
		fc, pc, _ := answerConn(raw, &out)
		a, err := fc.readAnswerHead(pc)
		if err != nil {
			return // not relayed: net/http's path answers instead
		}
		res, err := http.ReadResponse(bufio.NewReader(strings.NewReader(raw)), &http.Request{Method: http.MethodGet})
		if err != nil {
			t.Fatalf("%q: the fast front relays it, net/http refuses it: %v", raw, err)
		}
		// An answer without a length or chunking runs until the upstream
		// closes: the relay ends both connections after it.
		bodyless := a.code < 200 || a.code == 204 || a.code == 304
		untilClose := !bodyless && !a.chunked && a.length < 0
		if res.StatusCode != a.code || res.Close != (a.close || untilClose) {
			t.Fatalf("%q: net/http reads status %d close %v; fast front %d %v", raw, res.StatusCode, res.Close, a.code, a.close)
		}
		if bodyless {
			return // no body whatever the head says
		}
		chunked := len(res.TransferEncoding) == 1 && res.TransferEncoding[0] == "chunked"
		if chunked != a.chunked || (!chunked && res.ContentLength != a.length) {
			t.Fatalf("%q: net/http reads length %d encoding %v; fast front %d chunked %v", raw, res.ContentLength, res.TransferEncoding, a.length, a.chunked)
		}
	})
}

// FuzzRelayChunked holds the chunked relay to net/http's chunked reader:
// a body the relay passes on, net/http reads too, ending at the same
// byte (or the pooled connection would be out of step), and what the
// relay wrote is exactly those bytes, which net/http reads as the same
// body and trailers.
func FuzzRelayChunked(f *testing.F) {
	for _, s := range []string{
		"5\r\nhello\r\n0\r\n\r\n",
		"3;ext=1\r\nabc\r\n0\r\nX-Sum: 3\r\n\r\nGET next",
		"a \r\n0123456789\r\n0\r\n\r\n",
		" 1\r\nx\r\n0\r\n\r\n",
		"1\nx\r\n0\r\n\r\n",
		"0\r\n\r\n",
		"f\r\n0123456789abcde\r\n0\r\nA: 1\r\nB: 2\r\n\r\n",
	} {
		f.Add(s)
	}
	const head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	read := func(raw string) (body string, trailer http.Header, consumed int, err error) {
		src := strings.NewReader(head + raw)
		br := bufio.NewReader(src)
		res, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
		if err != nil {
			return "", nil, 0, err
		}
		b, err := io.ReadAll(res.Body)
		return string(b), res.Trailer, len(head) + len(raw) - src.Len() - br.Buffered() - len(head), err
	}
	f.Fuzz(func(t *testing.T, raw string) {
		var out bytes.Buffer
		fc, pc, src := answerConn(raw, &out)
		if err := fc.relayChunked(pc); err != nil {
			return
		}
		if err := fc.bw.Flush(); err != nil {
			t.Fatal(err)
		}
		consumed := len(raw) - src.Len() - pc.br.Buffered()
		body, trailer, n, err := read(raw)
		if err != nil {
			t.Fatalf("%q: relayed, but net/http refuses it: %v", raw, err)
		}
		if n != consumed {
			t.Fatalf("%q: the relay ends the body after %d bytes, net/http after %d", raw, consumed, n)
		}
		if out.String() != raw[:consumed] {
			t.Fatalf("%q: relayed %q, want the bytes as they came", raw, out.String())
		}
		body2, trailer2, _, err := read(out.String())
		if err != nil || body2 != body || !reflect.DeepEqual(trailer, trailer2) {
			t.Fatalf("%q: relayed copy reads as %q %v (%v); the original as %q %v", raw, body2, trailer2, err, body, trailer)
		}
	})
}
