//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/cloudzero-otel/cloudzeroexporter/internal/emulator"
	"github.com/cloudzero-otel/cloudzeroexporter/internal/loadgen"
)

var benchTemplate = template.Must(template.New("bench").Parse(`
receivers:
  otlp:
    protocols:
      grpc: {endpoint: "127.0.0.1:{{.GRPC}}"}
exporters:
  debug: {verbosity: basic}
  cloudzero:
    endpoint: {{.Endpoint}}
    api_key: {{.APIKey}}
    streams:
      - {name: lg-requests, metrics: [lg.requests], element_name: customer.id, filter: {"custom:feature": feature}}
service:
  telemetry:
    metrics: {level: none}
    logs: {level: warn}
  pipelines:
    metrics: {receivers: [otlp], exporters: [{{.Exporter}}]}
`))

// BenchmarkCollectorCPU measures the collector's CPU (user + system, from
// the process' rusage) per million points, for the same load through the
// cloudzero exporter (shipped defaults) and through the debug exporter, in
// the same run. Each run starts a fresh collector, sends 1,000,000 delta
// points in 5,000 keys with internal/loadgen, then stops it (SIGTERM: the
// cloudzero exporter's shutdown flush is included); an idle run (start,
// stop) is subtracted. Run with `make bench-collector`.
func BenchmarkCollectorCPU(b *testing.B) {
	const points = 1_000_000
	em, err := emulator.Start("127.0.0.1:0", emulator.Config{APIKey: apiKey})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = em.Shutdown(context.Background()) }()
	cpu := map[string]time.Duration{}
	for range b.N {
		for _, exp := range []string{"debug", "cloudzero"} {
			cpu[exp+"-idle"] += runCollectorLoad(b, em.URL, exp, 0)
			cpu[exp] += runCollectorLoad(b, em.URL, exp, points)
		}
	}
	per := func(exp string) float64 {
		return (cpu[exp] - cpu[exp+"-idle"]).Seconds() / float64(b.N) / (points / 1e6)
	}
	b.ReportMetric(per("debug"), "debug-cpu-s/Mpoints")
	b.ReportMetric(per("cloudzero"), "cloudzero-cpu-s/Mpoints")
	b.ReportMetric(per("cloudzero")/per("debug"), "cloudzero/debug")
}

// runCollectorLoad starts the collector with exporter exp, sends points
// (none: an idle run) and returns the CPU the process used.
func runCollectorLoad(b *testing.B, endpoint, exp string, points int) time.Duration {
	b.Helper()
	dir := b.TempDir()
	port := freePort(b)
	var cfg bytes.Buffer
	if err := benchTemplate.Execute(&cfg, map[string]any{"GRPC": port, "Endpoint": endpoint, "APIKey": apiKey, "Exporter": exp}); err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(dir, "collector.yaml")
	if err := os.WriteFile(path, cfg.Bytes(), 0o600); err != nil {
		b.Fatal(err)
	}
	bin := os.Getenv("COLLECTOR_BIN")
	if bin == "" {
		b.Fatal("COLLECTOR_BIN must point at the built collector (make bench-collector sets it)")
	}
	logf, err := os.Create(filepath.Join(dir, "collector.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--config="+path)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := waitListening(ctx, port); err != nil {
		_ = cmd.Process.Kill()
		b.Fatal(err)
	}
	if points > 0 {
		res, err := loadgen.Run(ctx, loadgen.Config{Endpoint: fmt.Sprintf("127.0.0.1:%d", port), Metric: "lg.requests",
			Customers: 1000, Features: 5, Points: points, PointsPerRequest: 1000, Workers: 2})
		if err != nil || res.Refused > 0 {
			_ = cmd.Process.Kill()
			b.Fatalf("load: %v, %d refused", err, res.Refused)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			b.Fatalf("collector: %v", err)
		}
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		b.Fatal("the collector did not stop")
	}
	return cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

func waitListening(ctx context.Context, port int) error {
	for {
		if c, err := (&net.Dialer{Timeout: 100 * time.Millisecond}).DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the collector did not listen on %d: %w", port, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
