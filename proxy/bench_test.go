package proxy_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/cohortserver/cohort/config"
)

// BenchmarkHop measures one request with a session cookie served where it
// entered (local) against one entering a node that does not own it and is
// forwarded over the cluster port (forwarded). The difference is the cost
// of the hop.
func BenchmarkHop(b *testing.B) {
	c, _ := newCluster(b, func(cfg *config.Config) { cfg.Front.AccessLog = false })
	entry := c.Node("n1")
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	for _, bc := range []struct{ name, owner string }{{"local", "n1"}, {"forwarded", "n2"}} {
		cookie := cookieName + "=" + testToken + "." + entry.Node().Members().Route(bc.owner)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest(http.MethodGet, entry.URL("/t/who"), nil)
					req.Header.Set("Cookie", cookie)
					res, err := hc.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != http.StatusOK {
						b.Errorf("status %d", res.StatusCode)
						return
					}
				}
			})
		})
	}
}
