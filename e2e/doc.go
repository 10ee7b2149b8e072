// Package e2e holds the end-to-end tests of sextant: the real kernel
// programs (probes) and the real collector, watching real HTTP/2, gRPC and
// HTTP/1.1 peers (Go net/http h2c, grpc-go, curl, h2load/nghttpd), and
// asserting that exactly the expected flows come out: none missing, none
// extra, none wrong.
//
// The tests need root (they load eBPF programs). They skip for other users,
// except when CI=true, where a skip would hide a broken pipeline and is a
// failure instead.
//
// The Go peers run in child processes (the test binary re-executed with
// SEXTANT_E2E_PEER set), so that each side of an exchange has its own pid
// that the flows must carry, and so that the agent's own process (which the
// probes always exclude) is not the one doing the traffic.
package e2e
