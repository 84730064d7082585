package config

import (
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// FrontConfig holds the settings of the front capability.
type FrontConfig struct{}

func defaultFront() FrontConfig { return FrontConfig{} }

// flags registers this capability's flags with its defaults.
func (d FrontConfig) flags(fs *pflag.FlagSet) {}

// load reads the merged flag/env/file values.
func (c *FrontConfig) load(v *viper.Viper) {}

// validate reports each problem through add, naming the flag (see problem).
func (c *FrontConfig) validate(add func(error)) {}
