package files_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/cohortserver/cohort/files"
	"github.com/cohortserver/cohort/internal/poll"
	"github.com/cohortserver/cohort/testcluster"
)

// A follower's lookup asks the leader over the call channel, not HTTP,
// and answers whether the leader holds the entry it holds.
func TestSameAtLeaderAsksTheLeaderOverTheCallChannel(t *testing.T) {
	c := testcluster.New(t, 3)
	leader := c.Leader()
	follower := c.Followers()[0]
	if code, body := call(t, c, leader, http.MethodPut, "/_cohort/api/files/look/a.txt", "a"); code != http.StatusCreated && code != http.StatusOK {
		t.Fatalf("create: %d %s", code, body)
	}
	f := store(t, follower)
	poll.Until(t, 30*time.Second, func() (bool, string) {
		return f.Entry("look/a.txt").Live(), "the follower never applied the create"
	})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		path string
		here files.Entry
		want bool
	}{
		{"look/a.txt", f.Entry("look/a.txt"), true},
		{"look/a.txt", files.Entry{}, false}, // the leader holds a live file
		{"look/none", files.Entry{}, true},
		{"look", f.Entry("look"), true}, // a directory
	} {
		same, err := f.SameAtLeader(ctx, tc.path, tc.here, 5*time.Second)
		if err != nil || same != tc.want {
			t.Errorf("SameAtLeader(%s, %+v) = %v, %v; want %v", tc.path, tc.here, same, err, tc.want)
		}
	}
	if n := store(t, leader).HTTPExists(); n != 0 {
		t.Errorf("the leader answered %d lookups over HTTP, want none", n)
	}
}

func TestExistsAnswerEncoding(t *testing.T) {
	for _, tc := range []struct {
		exists, dir bool
		version     uint64
	}{{false, false, 0}, {true, false, 7}, {true, true, 1 << 40}, {false, false, 3}} {
		e, d, v, err := files.DecodeWire(files.EncodeWire(tc.exists, tc.dir, tc.version))
		if err != nil || e != tc.exists || d != tc.dir || v != tc.version {
			t.Errorf("round trip of %+v: %v %v %v %v", tc, e, d, v, err)
		}
	}
	for _, bad := range [][]byte{nil, {1}, {4, 1}, {1, 0x80}, {1, 1, 1}} {
		if _, _, _, err := files.DecodeWire(bad); err == nil {
			t.Errorf("DecodeWire(%v) took a malformed answer", bad)
		}
	}
}
