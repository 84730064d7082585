package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseWrk(t *testing.T) {
	out := `Running 5s test @ http://127.0.0.1:19081/demo/api/counter
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   612.39us  210.10us   9.12ms   90.00%
    Req/Sec    24.06k     1.02k   25.90k    70.00%
  Latency Distribution
     50%  566.00us
     75%  650.00us
     90%  800.00us
     99%    1.23ms
  120000 requests in 5.00s, 27.85MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:  24000.00
Transfer/sec:      5.57MB
`
	smp, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if smp.p50 != 566*time.Microsecond || smp.p99 != 1230*time.Microsecond {
		t.Errorf("p50 %v p99 %v", smp.p50, smp.p99)
	}
	if smp.ok != 120000-10 || smp.fail != 10 {
		t.Errorf("ok %d fail %d, want %d and 10", smp.ok, smp.fail, 120000-10)
	}
	if want := 24000.0 * float64(120000-10) / 120000; smp.ops != want {
		t.Errorf("ops %v, want %v (successful only)", smp.ops, want)
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused"); err == nil || !strings.Contains(err.Error(), "no figures") {
		t.Errorf("err = %v", err)
	}
}

func TestCPUTicks(t *testing.T) {
	if _, err := cpuTicks(1); err != nil {
		t.Skip("no /proc here:", err)
	}
	m := newCPUMeter(1)
	if got := m.perOp(0); got[0] != 0 {
		t.Errorf("perOp(0) = %v", got)
	}
}
