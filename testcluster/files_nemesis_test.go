package testcluster_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/cohortserver/cohort/files"
	"github.com/cohortserver/cohort/testcluster"
)

// Outcomes of a file operation as its client saw them.
const (
	fileOK      = "ok"      // 2xx: it happened (a delete's 404: the path was absent)
	fileNone    = "none"    // surely no effect: never sent, or refused (4xx)
	fileUnknown = "unknown" // error or 5xx: it may or may not have happened
)

// fileOp is one put or delete of the files test, or a final read.
type fileOp struct {
	Client  int
	Path    string
	Kind    string // "put", "delete", "read"
	SHA     string // put: the content's SHA-256; read: what was seen ("" = absent)
	Size    int
	Absent  bool // delete answered 404
	Outcome string
	Node    string // node it was sent to
	Detail  string
	Call    int64 // ns since the schedule began
	Return  int64 // ns since the schedule began (unknown: after every read)
}

func (o fileOp) String() string {
	s := fmt.Sprintf("%8.3f %8.3f c%-2d %-6s %-14s %-7s via %s", float64(o.Call)/1e9, float64(o.Return)/1e9, o.Client, o.Kind, o.Path, o.Outcome, o.Node)
	switch {
	case o.Kind == "put":
		s += fmt.Sprintf(" sha %.12s (%d B)", o.SHA, o.Size)
	case o.Kind == "read":
		s += fmt.Sprintf(" saw %.12s", o.SHA)
	case o.Absent:
		s += " (404)"
	}
	if o.Detail != "" {
		s += " " + o.Detail
	}
	return s
}

// fileModel is a register per path holding the content's SHA-256 ("" for
// no file): a put sets it, a delete clears it (answering 404 only when
// there was nothing), a read must see it.
var fileModel = porcupine.Model{
	Partition: testcluster.PartitionBy(func(op porcupine.Operation) string { return op.Input.(fileOp).Path }),
	Init:      func() any { return "" },
	Step: func(state, input, _ any) (bool, any) {
		in, cur := input.(fileOp), state.(string)
		switch in.Kind {
		case "put":
			return true, in.SHA
		case "delete":
			if in.Outcome == fileOK && in.Absent != (cur == "") {
				return false, cur
			}
			return true, ""
		default:
			return in.SHA == cur, cur
		}
	},
	DescribeOperation: func(input, _ any) string { return input.(fileOp).String() },
}

// fileContent is the content of one put: a header naming the op, so
// every put carries different bytes, then seeded random bytes.
func fileContent(seed uint64, client, i int, size int) []byte {
	b := make([]byte, size)
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	binary.LittleEndian.PutUint64(s[8:], uint64(client))
	binary.LittleEndian.PutUint64(s[16:], uint64(i))
	_, _ = rand.NewChaCha8(s).Read(b)
	copy(b, fmt.Sprintf("%d/%d/%d\n", seed, client, i))
	return b
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// fileRequest sends an admin request to one node's files API.
func fileRequest(ctx context.Context, c *testcluster.Cluster, nd *testcluster.Node, method, path string, body []byte) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, nd.URL(path), rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token())
	return http.DefaultClient.Do(req)
}

// neverSent reports whether err surely means the request reached no node.
func neverSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// fileTree is one node's listing: path -> "size sha256".
func fileTree(ctx context.Context, c *testcluster.Cluster, nd *testcluster.Node) (map[string]string, error) {
	resp, err := fileRequest(ctx, c, nd, http.MethodGet, "/_cohort/api/files?prefix=", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("list on %s: HTTP %d: %s", nd.ID, resp.StatusCode, b)
	}
	var out struct {
		Files []files.Info `json:"files"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("list on %s: %w", nd.ID, err)
	}
	t := make(map[string]string, len(out.Files))
	for _, in := range out.Files {
		t[in.Path] = fmt.Sprintf("%d %s", in.Size, in.SHA256)
	}
	return t, nil
}

// TestFilesUnderNemesis has clients put (inline and, above
// files.InlineMax, pushed as blobs) and delete files through random nodes
// while the nemesis strikes, one seeded schedule per fault
// (COHORT_LONG=1: 100 schedules; COHORT_LIN_SCHEDULES, COHORT_LIN_SEED as
// for the session test), and a reader checks that every complete answer
// during the faults is content some put wrote to that path. After the heal
// the trees (path, size, SHA-256) must become equal on every node; every
// node must serve each path with exactly the listed content; and the
// history of puts, deletes and those final reads must be linearizable per
// path: an acknowledged put or delete is never lost or undone, no content
// appears that was never written there or was surely refused, and
// operations whose outcome is unknown may or may not have happened.
func TestFilesUnderNemesis(t *testing.T) {
	runNemesisGroups(t, 100, func(t *testing.T) func(*testing.T, uint64) {
		c := testcluster.New(t, 3, testcluster.WithDiskLimit(testcluster.NemesisDisk))
		c.WaitLeader(t)
		return func(t *testing.T, seed uint64) { runFilesSchedule(t, c, seed) }
	})
}

func runFilesSchedule(t *testing.T, c *testcluster.Cluster, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	start := time.Now()
	now := func() int64 { return int64(time.Since(start)) }
	var paths []string
	for i := range 5 {
		paths = append(paths, fmt.Sprintf("nemesis/%d/f%d", seed, i))
	}

	var mu sync.Mutex
	var ops []fileOp
	var seen []fileOp // complete reads during the run
	var readBad []string
	record := func(op fileOp) {
		mu.Lock()
		defer mu.Unlock()
		ops = append(ops, op)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for client := range 3 {
		crng := rand.New(rand.NewPCG(seed, uint64(client)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				nodes := c.Nodes()
				nd := nodes[crng.IntN(len(nodes))]
				op := fileOp{Client: client, Path: paths[crng.IntN(len(paths))], Node: nd.ID, Kind: "put"}
				var body []byte
				switch r := crng.IntN(20); {
				case r < 4:
					op.Kind = "delete"
				case r < 7: // larger than what travels inline: pushed as a blob
					body = fileContent(seed, client, i, files.InlineMax+1+crng.IntN(192<<10))
				default:
					body = fileContent(seed, client, i, 1+crng.IntN(4<<10))
				}
				method := http.MethodDelete
				if op.Kind == "put" {
					method, op.SHA, op.Size = http.MethodPut, sha(body), len(body)
				}
				op.Call = now()
				rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
				resp, err := fileRequest(rctx, c, nd, method, "/_cohort/api/files/"+op.Path, body)
				switch {
				case err != nil && neverSent(err):
					op.Outcome, op.Detail = fileNone, err.Error()
				case err != nil:
					op.Outcome, op.Detail = fileUnknown, err.Error()
				default:
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					switch code := resp.StatusCode; {
					case code/100 == 2:
						op.Outcome = fileOK
					case code == http.StatusNotFound && op.Kind == "delete":
						op.Outcome, op.Absent = fileOK, true
					case code/100 == 4:
						op.Outcome, op.Detail = fileNone, fmt.Sprintf("HTTP %d: %s", code, bytes.TrimSpace(b))
					default:
						op.Outcome, op.Detail = fileUnknown, fmt.Sprintf("HTTP %d: %s", code, bytes.TrimSpace(b))
					}
				}
				rcancel()
				op.Return = now()
				record(op)
			}
		}()
	}
	wg.Add(1)
	go func() { // reads during the faults: a complete answer is whole
		defer wg.Done()
		crng := rand.New(rand.NewPCG(seed, 99))
		for ctx.Err() == nil {
			nodes := c.Nodes()
			nd := nodes[crng.IntN(len(nodes))]
			p := paths[crng.IntN(len(paths))]
			rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := fileRequest(rctx, c, nd, http.MethodGet, "/_cohort/api/files/"+p, nil)
			if err == nil {
				b, rerr := io.ReadAll(resp.Body)
				resp.Body.Close()
				if rerr == nil && resp.StatusCode == http.StatusOK {
					got := sha(b)
					mu.Lock()
					seen = append(seen, fileOp{Path: p, Kind: "read", SHA: got, Node: nd.ID, Return: now()})
					if h := resp.Header.Get(files.HeaderSHA256); h != got {
						readBad = append(readBad, fmt.Sprintf("GET %s on %s: %d bytes with SHA-256 %.12s, header says %.12s", p, nd.ID, len(b), got, h))
					}
					mu.Unlock()
				}
			}
			rcancel()
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(5+crng.IntN(20)) * time.Millisecond): // pace the reader
			}
		}
	}()

	<-time.After(time.Duration(300+rng.IntN(500)) * time.Millisecond) // when the fault starts
	before := c.Leader()
	what, undo := c.StrikeWith(rng, faultOf(seed))
	holdFault(t, c, before, time.Duration(500+rng.IntN(700))*time.Millisecond, func(*testcluster.Node) (bool, string) { return true, "" })
	undo()
	<-time.After(300 * time.Millisecond) // writes go on across the heal
	cancel()
	wg.Wait()
	c.Heal()
	c.WaitLeader(t)

	// Catch-up is asynchronous: wait until every node lists the same tree
	// and serves every path of the schedule as listed.
	reads, want, bad := settledFiles(c, paths, now)
	for _, r := range reads {
		record(r)
	}

	mu.Lock()
	history := ops
	bad = append(bad, readBad...)
	bad = append(bad, fileContentViolations(history, seen)...)
	mu.Unlock()
	bad = append(bad, fileLostWrites(history)...)

	bad = append(bad, filesWritable(c, seed)...)

	res, unknown := fileHistoryLinearizable(history)
	var puts, large, deletes, acked int
	for _, op := range history {
		switch {
		case op.Kind == "put" && op.Size > files.InlineMax:
			large++
			fallthrough
		case op.Kind == "put":
			puts++
		case op.Kind == "delete":
			deletes++
		}
		if op.Kind != "read" && op.Outcome == fileOK {
			acked++
		}
	}
	t.Logf("seed %d: nemesis %q: %d puts (%d over the inline limit), %d deletes, %d acknowledged, %d with unknown outcome; %d reads during the run; %d files in the tree; linearizable: %v",
		seed, what, puts, large, deletes, acked, unknown, len(seen), len(want), res)
	if !res {
		bad = append(bad, "the history of puts, deletes and final reads is not linearizable per path")
	}
	if len(bad) > 0 {
		sorted := append([]fileOp(nil), history...)
		sort.SliceStable(sorted, func(i, j int) bool {
			if sorted[i].Path != sorted[j].Path {
				return sorted[i].Path < sorted[j].Path
			}
			return sorted[i].Call < sorted[j].Call
		})
		var b strings.Builder
		for _, op := range sorted {
			fmt.Fprintf(&b, "  %s\n", op)
		}
		t.Logf("history by path:\n%s", b.String())
		t.Fatalf("seed %d (nemesis %q): replay with COHORT_LIN_SEED=%d:\n  %s", seed, what, seed, strings.Join(bad, "\n  "))
	}
}

// settledFiles waits, 60 s at most, until every node lists the same tree
// (path, size, SHA-256) and serves each of paths whole as listed, or not
// at all, with the tree unchanged across those reads (a proposal whose
// client gave up can still land late: then it tries again). It returns the
// reads and the tree of the last attempt and, if the files never settled,
// what was last wrong.
// filesWritable checks that the healed cluster takes a write through every
// node again: a schedule that left the cluster unable to commit (a disk
// still full, a node that never rejoined) would otherwise pass with a
// history of unknown outcomes, vacuously linearizable.
func filesWritable(c *testcluster.Cluster, seed uint64) []string {
	var bad []string
	for _, nd := range c.Running() {
		deadline := time.Now().Add(30 * time.Second)
		var last string
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			resp, err := fileRequest(ctx, c, nd, http.MethodPut, fmt.Sprintf("/_cohort/api/files/nemesis/%d/writable-%s", seed, nd.ID), []byte("after the heal"))
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 == 2 {
					cancel()
					break
				}
				err = fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
			}
			cancel()
			last = err.Error()
			if time.Now().After(deadline) {
				bad = append(bad, fmt.Sprintf("no write through %s within 30 s of the heal: %s", nd.ID, last))
				break
			}
			<-time.After(200 * time.Millisecond)
		}
	}
	return bad
}

func settledFiles(c *testcluster.Cluster, paths []string, now func() int64) ([]fileOp, map[string]string, []string) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		reads, tree, bad := readFiles(c, paths, now)
		if len(bad) == 0 || time.Now().After(deadline) {
			return reads, tree, bad
		}
		<-time.After(200 * time.Millisecond) // polling interval of a bounded wait
	}
}

// readFiles is one attempt of settledFiles.
func readFiles(c *testcluster.Cluster, paths []string, now func() int64) ([]fileOp, map[string]string, []string) {
	listAll := func() (map[string]string, string) {
		var first map[string]string
		for i, nd := range c.Running() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			tr, err := fileTree(ctx, c, nd)
			cancel()
			if err != nil {
				return nil, err.Error()
			}
			if i == 0 {
				first = tr
			} else if !maps.Equal(tr, first) {
				a, _ := json.Marshal(first)
				b, _ := json.Marshal(tr)
				return nil, fmt.Sprintf("trees differ: %s lists %s, %s lists %s", c.Running()[0].ID, a, nd.ID, b)
			}
		}
		return first, ""
	}
	want, problem := listAll()
	if problem != "" {
		return nil, nil, []string{problem}
	}
	var reads []fileOp
	var bad []string
	for _, nd := range c.Running() {
		for _, p := range paths {
			op := fileOp{Client: 99, Path: p, Kind: "read", Node: nd.ID, Outcome: fileOK, Call: now()}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			resp, err := fileRequest(ctx, c, nd, http.MethodGet, "/_cohort/api/files/"+p, nil)
			var b []byte
			if err == nil {
				b, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			cancel()
			op.Return = now()
			switch {
			case err != nil:
				bad = append(bad, fmt.Sprintf("GET %s on %s: %v", p, nd.ID, err))
				continue
			case resp.StatusCode == http.StatusOK:
				op.SHA = sha(b)
				if got := fmt.Sprintf("%d %s", len(b), op.SHA); got != want[p] {
					bad = append(bad, fmt.Sprintf("GET %s on %s: %s, the tree lists %q", p, nd.ID, got, want[p]))
				}
			case resp.StatusCode == http.StatusNotFound:
				if _, ok := want[p]; ok {
					bad = append(bad, fmt.Sprintf("GET %s on %s: 404, the tree lists %q", p, nd.ID, want[p]))
				}
			default:
				bad = append(bad, fmt.Sprintf("GET %s on %s: HTTP %d: %.200s", p, nd.ID, resp.StatusCode, b))
				continue
			}
			reads = append(reads, op)
		}
	}
	if after, problem := listAll(); problem != "" {
		bad = append(bad, problem)
	} else if !maps.Equal(after, want) {
		bad = append(bad, "the tree changed during the reads")
	}
	return reads, want, bad
}

// fileContentViolations checks that every read that returned a whole file
// (during the run, or final) returned the content of a put to that path
// that did not surely fail: no partial, foreign or refused content.
func fileContentViolations(history, reads []fileOp) []string {
	var bad []string
	written := map[[2]string]fileOp{} // path, sha -> the put
	for _, op := range history {
		if op.Kind == "put" {
			written[[2]string{op.Path, op.SHA}] = op
		}
	}
	for _, r := range append(slices.Clone(reads), history...) {
		if r.Kind != "read" || r.SHA == "" {
			continue
		}
		put, ok := written[[2]string{r.Path, r.SHA}]
		switch {
		case !ok:
			bad = append(bad, fmt.Sprintf("%s on %s served content %.12s nobody wrote there (partial or foreign)", r.Path, r.Node, r.SHA))
		case put.Outcome == fileNone:
			bad = append(bad, fmt.Sprintf("%s on %s served content %.12s of a put that surely failed: %s", r.Path, r.Node, r.SHA, put))
		}
	}
	return bad
}

// fileHistoryLinearizable checks the puts, deletes and reads per path
// against fileModel. Operations that surely had no effect are left out;
// those with an unknown outcome may take effect at any time after their
// call, even after the final reads (a proposal can still commit after its
// client gave up). It also returns how many outcomes were unknown.
func fileHistoryLinearizable(history []fileOp) (bool, int) {
	var end int64
	for _, op := range history {
		end = max(end, op.Return)
	}
	var ops []porcupine.Operation
	unknown := 0
	for _, op := range history {
		switch op.Outcome {
		case fileNone:
			continue
		case fileUnknown:
			unknown++
			op.Return = end + 1
		}
		ops = append(ops, porcupine.Operation{ClientId: op.Client, Input: op, Call: op.Call, Return: op.Return})
	}
	return porcupine.CheckOperations(fileModel, ops), unknown
}

// fileLostWrites finds, per path, an acknowledged put or delete that every
// other operation on the path (except those surely without effect)
// returned before it began, and checks that the final reads show its
// result: the plain "acknowledged and not overwritten, so still there"
// rule, with a direct message (the linearizability check covers the rest).
func fileLostWrites(history []fileOp) []string {
	var bad []string
	byPath := map[string][]fileOp{}
	for _, op := range history {
		byPath[op.Path] = append(byPath[op.Path], op)
	}
	for p, ops := range byPath {
		last := -1
		for i, op := range ops {
			if op.Kind != "read" && op.Outcome == fileOK && (last < 0 || op.Call > ops[last].Call) {
				last = i
			}
		}
		if last < 0 {
			continue
		}
		final := true
		for i, op := range ops {
			if i == last || op.Kind == "read" || op.Outcome == fileNone {
				continue
			}
			if op.Outcome == fileUnknown || op.Return > ops[last].Call {
				final = false
			}
		}
		if !final {
			continue
		}
		want := ""
		if ops[last].Kind == "put" {
			want = ops[last].SHA
		}
		for _, op := range ops {
			if op.Kind == "read" && op.Client == 99 && op.SHA != want {
				what := "acknowledged put lost"
				if ops[last].Kind == "delete" {
					what = "acknowledged delete undone"
				}
				bad = append(bad, fmt.Sprintf("%s: %s (%s); %s serves %.12s", p, what, ops[last], op.Node, op.SHA))
			}
		}
	}
	sort.Strings(bad)
	return bad
}
