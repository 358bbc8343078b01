package sidecar

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	pb "github.com/rewarm/rewarm/proto/rewarmpb"
)

// TestLoad runs 64 concurrent clients against one server; every request must
// succeed. REWARM_LOADTEST_REQUESTS sets the requests per client (500 by
// default; nox -s bench runs 10,000 and reports the latency percentiles).
func TestLoad(t *testing.T) {
	perClient := 500
	if v := os.Getenv("REWARM_LOADTEST_REQUESTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("REWARM_LOADTEST_REQUESTS=%q", v)
		}
		perClient = n
	}
	const clients = 64
	path, stop := startServer(t, nil)
	defer stop()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		lat  = make([]time.Duration, 0, clients*perClient)
		errs []string
	)
	spec, _ := structpb.NewStruct(map[string]any{"kind": "infinite", "peak_lr": 3e-4, "const_lr": 1e-4, "cooldown_steps": 1000.0})
	start := time.Now()
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := Dial(path, "load")
			if err != nil {
				mu.Lock()
				errs = append(errs, err.Error())
				mu.Unlock()
				return
			}
			defer c.Close()
			r, err := c.Call(&pb.Request{Body: &pb.Request_OpenSession{OpenSession: &pb.OpenSession{Schedule: spec, Name: fmt.Sprint(i)}}})
			if err != nil || r.GetSession() == nil {
				mu.Lock()
				errs = append(errs, fmt.Sprintf("open: %v %v", err, r.GetError()))
				mu.Unlock()
				return
			}
			id := r.GetSession().GetSessionId()
			local := make([]time.Duration, 0, perClient)
			var bad []string
			for j := 0; j < perClient; j++ {
				t0 := time.Now()
				r, err := c.Call(&pb.Request{Body: &pb.Request_GetLr{GetLr: &pb.GetLR{SessionId: id, Step: int64(j), Count: 1}}})
				local = append(local, time.Since(t0))
				if err != nil || r.GetLr() == nil {
					bad = append(bad, fmt.Sprintf("get_lr: %v %v", err, r.GetError()))
				}
			}
			mu.Lock()
			lat = append(lat, local...)
			errs = append(errs, bad...)
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	wall := time.Since(start)
	if len(errs) > 0 {
		t.Fatalf("%d errors, first: %s", len(errs), errs[0])
	}
	sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })
	pct := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
	t.Logf("load: %d clients x %d requests, 0 errors, %.0f req/s, latency p50 %v p99 %v max %v",
		clients, perClient, float64(len(lat))/wall.Seconds(), pct(0.5), pct(0.99), lat[len(lat)-1])
}

func TestMetricsLoopbackOnly(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:9100": true, "[::1]:9100": true, "localhost:0": true,
		"0.0.0.0:9100": false, "10.0.0.1:80": false, "example:80": false, "nope": false} {
		if err := CheckLoopback(addr); (err == nil) != ok {
			t.Errorf("%s: %v", addr, err)
		}
	}
}

func TestDefaultSocketPath(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", dir)
	p, err := DefaultSocketPath("abc")
	if err != nil || p != dir+"/rewarm/rewarm-abc.sock" {
		t.Fatalf("%q %v", p, err)
	}
	fi, _ := os.Stat(dir + "/rewarm")
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
	long, err := DefaultSocketPath(string(make([]byte, 200)))
	if err != nil || len(long) > MaxSocketPath {
		t.Fatalf("long run id: %q %v", long, err)
	}
	_ = os.Chmod(dir+"/rewarm", 0o755)
	if _, err := DefaultSocketPath("x"); err == nil {
		t.Fatal("a directory other users can read was accepted")
	}
}
