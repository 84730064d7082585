package config

import (
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// DBConfig holds the settings of the db capability.
type DBConfig struct{}

func defaultDB() DBConfig { return DBConfig{} }

// flags registers this capability's flags with its defaults.
func (d DBConfig) flags(fs *pflag.FlagSet) {}

// load reads the merged flag/env/file values.
func (c *DBConfig) load(v *viper.Viper) {}

// validate reports each problem through add, naming the flag (see problem).
func (c *DBConfig) validate(add func(error)) {}
