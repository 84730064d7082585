package sessions

import "context"

// NewTestContext returns a context carrying a fresh request session of
// m, as the middleware would give a handler (benchmarks drive the API
// without HTTP with it).
func NewTestContext(ctx context.Context, m *Manager) context.Context {
	return context.WithValue(ctx, ctxKey{}, &reqSession{m: m})
}
