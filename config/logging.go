package config

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// LogLevels is a parsed --log-level: a default level and per-component
// overrides, written "raft=warn,front=debug,info" (a bare level is the
// default; "component=level" applies to loggers carrying that
// component attribute, as every package's logger does).
type LogLevels struct {
	Default    slog.Level
	Components map[string]slog.Level
}

// ParseLogLevels parses a --log-level value. An empty value means info.
func ParseLogLevels(s string) (LogLevels, error) {
	ll := LogLevels{Default: slog.LevelInfo, Components: map[string]slog.Level{}}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		comp, lvl, isComp := strings.Cut(part, "=")
		if !isComp {
			lvl = comp
		}
		var l slog.Level
		switch strings.ToLower(strings.TrimSpace(lvl)) {
		case "debug":
			l = slog.LevelDebug
		case "info":
			l = slog.LevelInfo
		case "warn", "warning":
			l = slog.LevelWarn
		case "error":
			l = slog.LevelError
		default:
			return ll, fmt.Errorf("%q: level %q must be debug, info, warn or error", part, lvl)
		}
		if !isComp {
			ll.Default = l
			continue
		}
		comp = strings.TrimSpace(comp)
		if comp == "" {
			return ll, fmt.Errorf("%q: component name missing before '='", part)
		}
		ll.Components[comp] = l
	}
	return ll, nil
}

// min returns the lowest level any logger may log at.
func (ll LogLevels) min() slog.Level {
	m := ll.Default
	for _, l := range ll.Components {
		m = min(m, l)
	}
	return m
}

// newLogHandler builds the handler of format (text or json) on w that
// filters by component.
func newLogHandler(w io.Writer, format string, ll LogLevels) slog.Handler {
	opts := &slog.HandlerOptions{Level: ll.min()}
	var inner slog.Handler
	if format == "json" {
		inner = slog.NewJSONHandler(w, opts)
	} else {
		inner = slog.NewTextHandler(w, opts)
	}
	if len(ll.Components) == 0 {
		return inner
	}
	return &componentHandler{inner: inner, levels: ll, level: ll.Default}
}

// componentHandler applies the level of the component a logger was
// narrowed to with .With("component", name).
type componentHandler struct {
	inner  slog.Handler
	levels LogLevels
	level  slog.Level
}

var _ slog.Handler = (*componentHandler)(nil)

// Enabled implements slog.Handler.
func (h *componentHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

// Handle implements slog.Handler.
func (h *componentHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.inner.Handle(ctx, r)
}

// WithAttrs implements slog.Handler; a component attribute selects the level.
func (h *componentHandler) WithAttrs(as []slog.Attr) slog.Handler {
	lvl := h.level
	for _, a := range as {
		if a.Key == "component" {
			if l, ok := h.levels.Components[a.Value.String()]; ok {
				lvl = l
			}
		}
	}
	return &componentHandler{inner: h.inner.WithAttrs(as), levels: h.levels, level: lvl}
}

// WithGroup implements slog.Handler.
func (h *componentHandler) WithGroup(name string) slog.Handler {
	return &componentHandler{inner: h.inner.WithGroup(name), levels: h.levels, level: h.level}
}
