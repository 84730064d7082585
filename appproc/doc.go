// Package appproc supervises the application process cohort starts beside
// itself (--app-command): it runs the command with /bin/sh -c in its own
// process group, hands it its environment, sends its output lines to the
// node's log (component app), restarts it with exponential backoff when it
// exits, stops it gracefully (SIGTERM to the group, SIGKILL after a grace)
// and makes sure it never outlives its node: a parent-death signal kills
// it when cohort dies, and Start kills what a previous run of the same
// node left behind (found by a marker in the processes' environment), so
// a restarted node never finds the app's port taken.
//
// It does not route requests to the app or judge its health: package
// upstream does both. It knows nothing of the cluster; the node tells it
// when to restart.
package appproc
