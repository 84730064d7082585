// Package app is the public Go API of cohort: build your own single binary
// that serves your handlers on a cohort cluster, with replicated sessions,
// shared files, leader-only jobs, cluster-wide messages and the business
// database, through one small surface.
//
//	cfg, err := app.LoadConfig(os.Args[1:]) // the flags of `cohort serve`
//	a, err := app.New(cfg)
//	a.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) { ... })
//	a.Migrations("shop", migrationsFS)      // run once per cluster by the leader
//	a.Jobs().Register("nightly", "0 3 * * *", nightly)
//	err = a.Run(ctx)                        // until ctx ends (SIGTERM)
//
// Every node of the cluster runs the same binary with the same handlers.
// Handlers sit behind the sessions middleware and the sticky front, so
// Sessions() works inside them on every node.
//
// The package owns nothing but this facade: the work is done by the
// packages it returns (sessions, files, jobs, broadcast, database/sql),
// wired by node.New exactly as `cohort serve` wires them.
package app
