// Package config owns the node's configuration: the typed Config with its
// defaults (Default, Dev), the flag set of `cohort serve` and `cohort dev`,
// and the merge of flags, COHORT_* environment variables and a YAML, TOML
// or JSON file (flag > env > file > default) through viper. It is the only
// package that imports viper; every other package receives typed structs.
//
// Validate reports every problem at once, each naming its flag, the value
// and what would be valid. Settings of one capability (sessions, front,
// files, jobs, db) live in that capability's file of this package.
package config
