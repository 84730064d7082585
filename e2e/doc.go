// Package e2e holds end-to-end tests that run the real cohort binary as
// separate processes on loopback (kill -9, SIGSTOP/SIGCONT, rolling
// restarts under load), drive dev mode in headless Chromium, and (through
// compose_test.sh and compose_app_test.sh) the docker-compose demo cluster
// and its app variant.
package e2e
