package config

import (
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// JobsConfig holds the settings of the jobs capability.
type JobsConfig struct{}

func defaultJobs() JobsConfig { return JobsConfig{} }

// flags registers this capability's flags with its defaults.
func (d JobsConfig) flags(fs *pflag.FlagSet) {}

// load reads the merged flag/env/file values.
func (c *JobsConfig) load(v *viper.Viper) {}

// validate reports each problem through add, naming the flag (see problem).
func (c *JobsConfig) validate(add func(error)) {}
