//go:build unix

package proxy

import (
	"net"
	"syscall"
)

// peerClosed reports whether the peer closed an idle connection (a FIN or
// a reset waits in the socket), with one non-blocking peek. A connection
// that cannot be inspected counts as open: using it then fails cleanly.
func peerClosed(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == nil:
			closed = n == 0 // end of stream; pending bytes (a TLS record) are fine
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK || err == syscall.EINTR:
		default:
			closed = true
		}
		return true
	})
	return closed || err != nil
}
