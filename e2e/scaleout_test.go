//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/emulator"
)

// deployConfig is a collector config of the deployment recipe, used as shipped.
func deployConfig(name string) string { return filepath.Join("..", "deploy", "config", name) }

// otelcol is one collector process of the scale-out test, run with one of
// deploy/config's files as shipped; the environment gives what differs
// between a pod and a process on this machine (addresses, ports, storage).
type otelcol struct {
	t                           *testing.T
	name, bin, logDir           string
	args, env                   []string
	grpc, http, health, metrics int
	runs                        int
	cmd                         *exec.Cmd
}

func newOtelcol(t *testing.T, name, bin, logDir string, args []string, env ...string) *otelcol {
	c := &otelcol{t: t, name: name, bin: bin, logDir: logDir, args: args,
		grpc: freePort(t), http: freePort(t), health: freePort(t), metrics: freePort(t)}
	c.env = append(env, "MY_POD_IP=127.0.0.1",
		"OTLP_GRPC_PORT="+strconv.Itoa(c.grpc), "OTLP_HTTP_PORT="+strconv.Itoa(c.http),
		"HEALTH_CHECK_PORT="+strconv.Itoa(c.health), "METRICS_PORT="+strconv.Itoa(c.metrics))
	t.Cleanup(func() {
		if c.cmd != nil {
			_ = c.cmd.Process.Kill()
			_ = c.cmd.Wait()
		}
		if t.Failed() {
			for i := 1; i <= c.runs; i++ {
				b, _ := os.ReadFile(c.logPath(i))
				t.Logf("%s run %d log (tail):\n%s", c.name, i, tail(string(b), 3000))
			}
		}
	})
	return c
}

func (c *otelcol) logPath(run int) string {
	return filepath.Join(c.logDir, fmt.Sprintf("%s-%d.log", c.name, run))
}

// start runs the collector and waits until health_check reports it ready
// (what the Kubernetes probes of deploy/ ask).
func (c *otelcol) start() {
	t := c.t
	t.Helper()
	c.runs++
	logf, err := os.Create(c.logPath(c.runs))
	require.NoError(t, err)
	defer logf.Close()
	cmd := exec.Command(c.bin, c.args...)
	cmd.Env = append(os.Environ(), c.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(t, cmd.Start())
	c.cmd = cmd
	client := &http.Client{Timeout: time.Second}
	require.Eventually(t, func() bool {
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", c.health))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 60*time.Second, 100*time.Millisecond, "%s: health_check never answered 200", c.name)
}

// stop sends sig and waits (bounded) for the collector to exit.
func (c *otelcol) stop(sig syscall.Signal) {
	c.t.Helper()
	stopProcess(c.t, c.cmd, sig, c.name)
	c.cmd = nil
}

// acceptedPoints is the collector's otelcol_receiver_accepted_metric_points
// (all transports), from its Prometheus endpoint.
func (c *otelcol) acceptedPoints() (int64, error) {
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", c.metrics))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var n int64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "otelcol_receiver_accepted_metric_points{") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q: %w", c.name, line, err)
		}
		n += int64(v)
	}
	return n, sc.Err()
}

func sumAccepted(cs ...*otelcol) (int64, error) {
	var n int64
	for _, c := range cs {
		v, err := c.acceptedPoints()
		if err != nil {
			return 0, err
		}
		n += v
	}
	return n, nil
}

// scaleOutLoad is what the scale-out test sends through the first tier: the
// example app (OTel SDK, cumulative, OTLP/HTTP) for twelve customers and
// telemetrygen (OTLP/gRPC) with a delta sum, a cumulative sum and a delta
// histogram, each for a customer of its own, all into the streams of
// deploy/config/gateway.yaml. The sums come from two telemetrygen
// instances each (service.instance.id a and b): their keys are fed by two
// series, which routing by series (streamID) would split between the
// gateways, and which routing by element keeps together.
func scaleOutLoad(ctx context.Context, t *testing.T, lb *otelcol, logDir string) (expectation, error) {
	const n, rate = 40, "2" // 20 s of telemetrygen points
	feed := &pipeline{t: t, grpc: lb.grpc, http: lb.http, logDir: logDir}
	want := expectation{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	type generator struct {
		customer, instance string
		args               []string
		add                func()
	}
	var gens []generator
	for _, inst := range []string{"a", "b"} {
		gens = append(gens,
			generator{"tg-delta", inst, []string{"--metric-type", "Sum", "--aggregation-temporality", "delta", "--otlp-metric-name", "app.requests"},
				func() { want.add(key("app-requests", "tg-delta", "search"), n*(n-1)/2) }}, // values 0..n-1
			generator{"tg-cumulative", inst, []string{"--metric-type", "Sum", "--aggregation-temporality", "cumulative", "--otlp-metric-name", "app.requests"},
				func() { want.add(key("app-requests", "tg-cumulative", "search"), n-1) }}) // 0..n-1, started after the gateways
	}
	gens = append(gens, generator{"tg-histogram", "a", []string{"--metric-type", "Histogram", "--aggregation-temporality", "delta", "--otlp-metric-name", "app.request.duration"},
		func() { want.add(key("app-request-count", "tg-histogram", "search"), 10*n) }}) // 10 observations per point
	for _, g := range gens {
		g.add()
		args := append(g.args, "--metrics", strconv.Itoa(n), "--rate", rate, "--otlp-attributes", `service.instance.id="`+g.instance+`"`,
			"--telemetry-attributes", `customer.id="`+g.customer+`"`, "--telemetry-attributes", `feature="search"`)
		wg.Go(func() { errs <- feed.telemetrygen(ctx, args...) })
	}
	wg.Go(func() {
		// 12 customers and the 3 of telemetrygen: routed by element, both
		// gateways get a share but once in ~16,000 runs (2 × 2^-15).
		s, err := feed.usageAppFor(ctx, "20s", 11, 12)
		mu.Lock()
		want.app(s)
		mu.Unlock()
		errs <- err
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return want, nil
}

// TestScaleOut: the deployment recipe run for real. A first tier
// (otelcol-cloudzero-lb with deploy/config/loadbalancer.yaml) routes the
// example app's and telemetrygen's points to two otelcol-cloudzero gateways
// (deploy/config/gateway.yaml: shipped defaults, storage on their own
// directories), which send to the local emulator. CloudZero must hold the
// exact totals per (stream, element, feature):
//   - sum: routed by streamID (loadbalancer-sum.yaml), gateways with
//     delivery: sum (the setting under test, with the routing it needs);
//   - replace: routed by customer.id, the element attribute;
//   - replace with gateway 1 SIGKILLed a third of the way in and restarted
//     on its directory: the first tier retries its share meanwhile, and the
//     gateway's ledger and series state come back from file_storage.
func TestScaleOut(t *testing.T) {
	lbBin := bin(t, "LB_COLLECTOR_BIN")
	gwBin := bin(t, "COLLECTOR_BIN")
	for _, tc := range []struct {
		name     string
		delivery string
		overlay  []string
		kill     bool
	}{
		{name: "sum by streamID", delivery: "sum", overlay: []string{deployConfig("loadbalancer-sum.yaml")}},
		{name: "replace by element", delivery: "replace"},
		{name: "replace, gateway killed and restarted", delivery: "replace", kill: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			em, err := emulator.Start("127.0.0.1:0", emulator.Config{APIKey: apiKey})
			require.NoError(t, err)
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = em.Shutdown(ctx)
			})
			dir := t.TempDir()
			var gws [2]*otelcol
			for i := range gws {
				gws[i] = newOtelcol(t, fmt.Sprintf("gateway-%d", i), gwBin, dir,
					[]string{"--config=" + deployConfig("gateway.yaml")},
					"CLOUDZERO_API_KEY="+apiKey, "CLOUDZERO_ENDPOINT="+em.URL, "CLOUDZERO_DELIVERY="+tc.delivery,
					"STORAGE_DIR="+filepath.Join(dir, fmt.Sprintf("storage-%d", i)))
				gws[i].start()
			}
			lbArgs := []string{"--config=" + deployConfig("loadbalancer.yaml")}
			for _, o := range tc.overlay {
				lbArgs = append(lbArgs, "--config="+o)
			}
			lb := newOtelcol(t, "first-tier", lbBin, dir, lbArgs,
				fmt.Sprintf("GATEWAY_0=127.0.0.1:%d", gws[0].grpc), fmt.Sprintf("GATEWAY_1=127.0.0.1:%d", gws[1].grpc))
			lb.start()

			from := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			type result struct {
				want expectation
				err  error
			}
			loaded := make(chan result, 1)
			go func() {
				want, err := scaleOutLoad(ctx, t, lb, dir)
				loaded <- result{want, err}
			}()
			if tc.kill {
				time.Sleep(7 * time.Second)
				require.NoError(t, gws[1].cmd.Process.Kill())
				_ = gws[1].cmd.Wait()
				gws[1].cmd = nil
				t.Logf("gateway-1 SIGKILLed %s into the load", time.Since(from).Round(time.Second))
				time.Sleep(2 * time.Second)
				gws[1].start()
			}
			r := <-loaded
			require.NoError(t, r.err)
			want := r.want

			// The first tier has delivered everything before it stops: at
			// shutdown, what it still retries is dropped (its queue is in memory).
			var perGateway [2]int64
			if tc.kill {
				// The restarted gateway's counter began again at 0: wait until
				// the gateways' intake has been still for longer than the first
				// tier's longest retry interval (5 s, ±50 %). The totals below
				// are the proof; this only decides when to look.
				var last int64 = -1
				stillSince := time.Now()
				require.Eventually(t, func() bool {
					n, err := sumAccepted(gws[0], gws[1])
					if err != nil || n != last {
						last, stillSince = n, time.Now()
						return false
					}
					return time.Since(stillSince) > 12*time.Second
				}, 2*time.Minute, 500*time.Millisecond, "the gateways' intake never settled")
			} else {
				require.Eventually(t, func() bool {
					in, err1 := lb.acceptedPoints()
					out, err2 := sumAccepted(gws[0], gws[1])
					return err1 == nil && err2 == nil && in > 0 && out == in
				}, 2*time.Minute, 200*time.Millisecond, "the gateways never received every point the first tier accepted")
			}
			for i, g := range gws {
				perGateway[i], err = g.acceptedPoints()
				require.NoError(t, err)
			}
			lbIn, err := lb.acceptedPoints()
			require.NoError(t, err)
			t.Logf("first tier accepted %d points; gateways accepted %d and %d (gateway-1 since its last start)", lbIn, perGateway[0], perGateway[1])
			assert.Positive(t, perGateway[0], "gateway-0 got a share")
			assert.Positive(t, perGateway[1], "gateway-1 got a share")

			lb.stop(syscall.SIGTERM)
			if tc.kill {
				b, err := os.ReadFile(lb.logPath(1))
				require.NoError(t, err)
				retries := strings.Count(string(b), "Will retry the request")
				t.Logf("the first tier retried %d requests while gateway-1 was down", retries)
				assert.Positive(t, retries, "the kill did not make the first tier retry: the test did not test the restart")
			}
			for _, g := range gws {
				g.stop(syscall.SIGTERM)
			}
			lost, dup := report(t, tc.name, want, em.Ledger(), from)
			assert.Zero(t, lost.Sign(), "units lost: %s", lost.RatString())
			assert.Zero(t, dup.Sign(), "units duplicated: %s", dup.RatString())
		})
	}
}
