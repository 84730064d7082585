package config

import (
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// SessionsConfig holds the settings of the sessions capability.
type SessionsConfig struct{}

func defaultSessions() SessionsConfig { return SessionsConfig{} }

// flags registers this capability's flags with its defaults.
func (d SessionsConfig) flags(fs *pflag.FlagSet) {}

// load reads the merged flag/env/file values.
func (c *SessionsConfig) load(v *viper.Viper) {}

// validate reports each problem through add, naming the flag (see problem).
func (c *SessionsConfig) validate(add func(error)) {}
