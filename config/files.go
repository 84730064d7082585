package config

import (
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// FilesConfig holds the settings of the files capability.
type FilesConfig struct{}

func defaultFiles() FilesConfig { return FilesConfig{} }

// flags registers this capability's flags with its defaults.
func (d FilesConfig) flags(fs *pflag.FlagSet) {}

// load reads the merged flag/env/file values.
func (c *FilesConfig) load(v *viper.Viper) {}

// validate reports each problem through add, naming the flag (see problem).
func (c *FilesConfig) validate(add func(error)) {}
