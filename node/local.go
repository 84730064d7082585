package node

import (
	"net"
	"net/http"
	"net/netip"
)

// localRoutes mounts /_cohort/local/: what the app beside this node may
// ask without a token, answered only to a loopback client that came
// through no proxy.
//
//	GET /_cohort/local/is-leader  {"node_id","leader","leader_id","term"}
//	GET /_cohort/local/members    {"node_id","leader_id","members":[{"id","http_address","state","healthy","leader"}]}
func (n *Node) localRoutes() {
	n.mux.Handle("GET /_cohort/local/is-leader", n.loopbackOnly(func(w http.ResponseWriter, _ *http.Request) {
		in := n.cluster.Info()
		WriteJSON(w, http.StatusOK, map[string]any{
			"node_id": n.cfg.NodeID, "leader": in.State == "leader" && in.LeaderID == n.cfg.NodeID,
			"leader_id": in.LeaderID, "term": in.Term,
		})
	}))
	n.mux.Handle("GET /_cohort/local/members", n.loopbackOnly(func(w http.ResponseWriter, r *http.Request) {
		type member struct {
			ID          string `json:"id"`
			HTTPAddress string `json:"http_address"`
			State       string `json:"state"`
			Healthy     bool   `json:"healthy"`
			Leader      bool   `json:"leader"`
		}
		st := n.Status(r.Context())
		out := make([]member, 0, len(st.Members))
		for _, m := range st.Members {
			out = append(out, member{ID: m.ID, HTTPAddress: m.HTTPAddress, State: m.State, Healthy: m.Healthy, Leader: m.Leader})
		}
		WriteJSON(w, http.StatusOK, map[string]any{"node_id": n.cfg.NodeID, "leader_id": st.LeaderID, "members": out})
	}))
}

// loopbackOnly refuses requests from anywhere but this machine's loopback,
// and any that passed a proxy (X-Forwarded-For, Forwarded): a reverse
// proxy on the same host would otherwise make every client look local.
func (n *Node) loopbackOnly(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		ip, perr := netip.ParseAddr(host)
		if err != nil || perr != nil || !ip.Unmap().IsLoopback() ||
			r.Header.Get("X-Forwarded-For") != "" || r.Header.Get("Forwarded") != "" {
			WriteError(w, http.StatusForbidden, "/_cohort/local/ answers only the app on this machine's loopback, not through a proxy")
			return
		}
		h(w, r)
	})
}
