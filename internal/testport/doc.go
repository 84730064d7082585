// Package testport hands tests loopback TCP addresses that no other test
// in the process holds and that no outgoing connection can take.
//
// The common trick, listening on 127.0.0.1:0 and closing the listener,
// races twice: the kernel may hand the same port to the next :0 listener
// (two nodes of one test cluster were once given the same HTTP port), and
// any outgoing connection on the machine may take it as its local port
// before the test binds it. testport picks ports below the kernel's
// ephemeral range (net.ipv4.ip_local_port_range), which neither :0
// listeners nor outgoing connections use, remembers every port it handed
// out in this process, and checks that the port can be bound right now.
//
// Listen is the race-free form: the caller keeps the listener. Addr is for
// addresses another process binds (the e2e tests' real binaries) or that a
// restarted server binds again.
//
// testport is for tests only; it owns nothing the product uses.
package testport
