package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	cloudzeroexporter "github.com/cloudzero-otel/cloudzeroexporter"
	czexporter "github.com/cloudzero-otel/cloudzeroexporter/exporter"
	"github.com/cloudzero-otel/cloudzeroexporter/internal/collectorconf"
	"github.com/cloudzero-otel/cloudzeroexporter/record"
)

const previewExample = `  # What would the exporter send for metrics the collector's file exporter wrote (OTLP JSON, one
  # export per line)?
  cloudzero preview --config collector.yaml metrics.jsonl
  cloudzero preview --config collector.yaml --exporter cloudzero/billing --output json metrics.jsonl`

const validateExample = `  cloudzero validate --config collector.yaml
  cloudzero validate --config collector.yaml --exporter cloudzero/billing`

// loadExporter reads the collector config and picks the exporter: the one
// named, or the only cloudzero exporter.
func loadExporter(ctx context.Context, path, id string) (*collectorconf.File, []string, error) {
	f, err := collectorconf.Load(ctx, path)
	if err != nil {
		return nil, nil, err
	}
	if id != "" {
		return f, []string{id}, nil
	}
	ids := f.Exporters()
	if len(ids) == 0 {
		return nil, nil, fmt.Errorf("%s: no cloudzero exporter under exporters", path)
	}
	return f, ids, nil
}

func runValidate(ctx context.Context, args []string, e env) int {
	fs := newFlags("validate", "--config collector.yaml [--exporter cloudzero/name]", validateExample, e)
	config := fs.String("config", "", "collector config file (required)")
	id := fs.String("exporter", "", "exporter to check (default: every cloudzero exporter in the file)")
	rest, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	if *config == "" || len(rest) > 0 {
		return usageError(e, fs, "--config is required, and validate takes no other argument")
	}
	f, ids, err := loadExporter(ctx, *config, *id)
	if err != nil {
		fmt.Fprintf(e.stderr, "cloudzero: %v\n", err)
		return exitUsage
	}
	status := exitOK
	for _, id := range ids {
		if err := f.Validate(id); err != nil {
			fmt.Fprintf(e.stdout, "%s: %v\n", id, err)
			status = exitUsage
			continue
		}
		fmt.Fprintf(e.stdout, "%s: ok\n", id)
	}
	return status
}

func runPreview(ctx context.Context, args []string, e env) int {
	fs := newFlags("preview", "--config collector.yaml [--exporter cloudzero/name] [--output table|json] FILE...", previewExample, e)
	config := fs.String("config", "", "collector config file (required)")
	id := fs.String("exporter", "", "exporter whose section to use (default: the file's only cloudzero exporter)")
	output := fs.String("output", "table", "table or json")
	files, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	switch {
	case *config == "":
		return usageError(e, fs, "--config is required")
	case *output != "table" && *output != "json":
		return usageError(e, fs, "--output must be table or json")
	case len(files) == 0:
		return usageError(e, fs, "no metrics files (use - for stdin)")
	}
	f, ids, err := loadExporter(ctx, *config, *id)
	if err == nil && len(ids) > 1 {
		err = fmt.Errorf("%s has several cloudzero exporters (%s): name one with --exporter", *config, strings.Join(ids, ", "))
	}
	var cfg *cloudzeroexporter.Config
	if err == nil {
		cfg, err = f.ExporterWith(ids[0], dryRunConfig)
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "cloudzero: %v\n", err)
		return exitUsage
	}
	var batches []pmetric.Metrics
	for _, name := range files {
		data, err := openInput(name, e.stdin)
		if err == nil {
			var b []pmetric.Metrics
			b, err = readOTLPJSON(data)
			batches = append(batches, b...)
		}
		if err != nil {
			fmt.Fprintf(e.stderr, "cloudzero: %s: %v\n", name, err)
			return exitUsage
		}
	}
	res, err := preview(ctx, ids[0], cfg, batches)
	if err != nil {
		fmt.Fprintf(e.stderr, "cloudzero: preview: %v\n", err)
		return exitUsage
	}
	res.print(e, *output)
	return exitOK
}

// readOTLPJSON reads OTLP JSON metrics: one export per line (as the file
// exporter writes them), or one document over several lines.
func readOTLPJSON(data []byte) ([]pmetric.Metrics, error) {
	u := &pmetric.JSONUnmarshaler{}
	var out []pmetric.Metrics
	var lineErr error
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 256<<20)
	for n := 1; sc.Scan() && lineErr == nil; n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		md, err := u.UnmarshalMetrics(line)
		if err != nil {
			lineErr = fmt.Errorf("line %d: not OTLP JSON metrics: %w", n, err)
		}
		out = append(out, md)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if lineErr == nil {
		return out, nil
	}
	if md, err := u.UnmarshalMetrics(data); err == nil {
		return []pmetric.Metrics{md}, nil
	}
	return nil, lineErr
}

// previewResult is what the exporter made of the metrics.
type previewResult struct {
	records  []rawRecord
	received int64
	ignored  int64
	dropped  map[string]int64
	refused  map[string]int64
	// recordsDropped and unitsDropped are the delivery's drops, by reason:
	// records made of the data points that the exporter does not send
	// (e.g. non_positive: net usage not > 0).
	recordsDropped map[string]int64
	unitsDropped   map[string]float64
}

// preview runs the metrics through the exporter component itself, in
// dry-run mode, and reads back the requests it would have sent: the
// records are exactly the exporter's. Delivery is sum, without storage:
// for one run the records are the same as replace's totals.
func preview(ctx context.Context, id string, cfg *cloudzeroexporter.Config, batches []pmetric.Metrics) (*previewResult, error) {
	dir, err := os.MkdirTemp("", "cloudzero-preview-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	c := *cfg
	c.DryRunFile = filepath.Join(dir, "requests.jsonl")
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.WithoutCancel(ctx)) }()
	var cid component.ID
	if err := cid.UnmarshalText([]byte(id)); err != nil {
		return nil, err
	}
	set := exporter.Settings{ID: cid, TelemetrySettings: component.TelemetrySettings{
		Logger: zap.NewNop(), MeterProvider: mp, TracerProvider: tracenoop.NewTracerProvider(), Resource: pcommon.NewResource(),
	}, BuildInfo: component.BuildInfo{Command: "cloudzero"}}
	exp, err := cloudzeroexporter.NewFactory().CreateMetrics(ctx, set, &c)
	if err != nil {
		return nil, err
	}
	if err := exp.Start(ctx, noHost{}); err != nil {
		return nil, err
	}
	res := &previewResult{dropped: map[string]int64{}, refused: map[string]int64{},
		recordsDropped: map[string]int64{}, unitsDropped: map[string]float64{}}
	for _, md := range batches {
		_ = exp.ConsumeMetrics(ctx, md) // a refusal is counted in datapoints_refused
	}
	if err := exp.Shutdown(ctx); err != nil {
		return nil, err
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		return nil, err
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if f, ok := m.Data.(metricdata.Sum[float64]); ok && strings.TrimPrefix(m.Name, "otelcol_exporter_cloudzero_") == "units_dropped" {
				for _, p := range f.DataPoints {
					reason, _ := p.Attributes.Value(attribute.Key("reason"))
					res.unitsDropped[reason.AsString()] += p.Value
				}
				continue
			}
			s, ok := m.Data.(metricdata.Sum[int64])
			if !ok {
				continue
			}
			for _, p := range s.DataPoints {
				reason, _ := p.Attributes.Value(attribute.Key("reason"))
				switch strings.TrimPrefix(m.Name, "otelcol_exporter_cloudzero_") {
				case "datapoints_received":
					res.received += p.Value
				case "datapoints_ignored":
					res.ignored += p.Value
				case "datapoints_dropped":
					res.dropped[reason.AsString()] += p.Value
				case "datapoints_refused":
					res.refused[reason.AsString()] += p.Value
				case "records_dropped":
					res.recordsDropped[reason.AsString()] += p.Value
				}
			}
		}
	}
	data, err := os.ReadFile(c.DryRunFile)
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	var probs problems
	res.records = readReplay("requests", data, &probs)
	if len(probs) > 0 { // not reached: the exporter writes what readReplay reads
		return nil, fmt.Errorf("reading the exporter's requests: %s", strings.Join(probs, "; "))
	}
	return res, nil
}

// dryRunConfig makes the exporter's config a preview's: dry run (no key
// needed), sum without storage (for one run, the same records as replace's
// totals).
func dryRunConfig(c *cloudzeroexporter.Config) {
	c.DryRun = true
	c.Delivery, c.Storage = string(czexporter.OpSum), nil
	if c.APIKey == "" {
		c.APIKey = "preview-sends-nothing"
	}
}

type noHost struct{}

func (noHost) GetExtensions() map[component.ID]component.Component { return nil }

func (r *previewResult) print(e env, output string) {
	sort.SliceStable(r.records, func(i, j int) bool {
		a, b := r.records[i], r.records[j]
		if a.stream != b.stream {
			return a.stream < b.stream
		}
		if a.timestamp != b.timestamp {
			return a.timestamp < b.timestamp
		}
		return a.element < b.element
	})
	if output == "json" {
		type rec struct {
			Stream      string              `json:"stream"`
			Timestamp   string              `json:"timestamp"`
			Granularity string              `json:"granularity"`
			ElementName string              `json:"element_name"`
			Filter      map[string][]string `json:"filter,omitempty"`
			Value       string              `json:"value"`
		}
		out := struct {
			Records  []rec            `json:"records"`
			Received int64            `json:"datapoints_received"`
			Ignored  int64            `json:"datapoints_ignored"`
			Dropped  map[string]int64 `json:"datapoints_dropped"`
			Refused  map[string]int64 `json:"datapoints_refused"`
			// Records the exporter made but would not send, by reason.
			RecordsDropped map[string]int64   `json:"records_dropped"`
			UnitsDropped   map[string]float64 `json:"units_dropped"`
		}{Records: []rec{}, Received: r.received, Ignored: r.ignored, Dropped: r.dropped, Refused: r.refused,
			RecordsDropped: r.recordsDropped, UnitsDropped: r.unitsDropped}
		for _, x := range r.records {
			out.Records = append(out.Records, rec{x.stream, x.timestamp, x.granularity, x.element, x.filter, x.value})
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
		return
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tTIMESTAMP\tGRANULARITY\tELEMENT\tFILTER\tVALUE")
	for _, x := range r.records {
		var fl []string
		for _, k := range slices.Sorted(maps.Keys(x.filter)) {
			fl = append(fl, k+"="+strings.Join(x.filter[k], "|"))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", x.stream, x.timestamp, x.granularity, x.element, strings.Join(fl, ","), x.value)
	}
	_ = tw.Flush()
	fmt.Fprintf(e.stdout, "%d records from %d data points (%d feed no stream)\n", len(r.records), r.received, r.ignored)
	for _, m := range []struct {
		what   string
		counts map[string]int64
	}{{"dropped", r.dropped}, {"refused", r.refused}} {
		reasons := make([]string, 0, len(m.counts))
		for k := range m.counts {
			reasons = append(reasons, k)
		}
		sort.Strings(reasons)
		for _, k := range reasons {
			fmt.Fprintf(e.stdout, "%s %d data points: %s\n", m.what, m.counts[k], k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(r.recordsDropped)) {
		units := ""
		if u := r.unitsDropped[k]; u != 0 {
			units = " (" + record.FormatValue(u) + " units)"
		}
		why := k
		if w := previewDropReasons[k]; w != "" {
			why += " (" + w + ")"
		}
		fmt.Fprintf(e.stdout, "dropped %d records%s the exporter would not send: %s\n", r.recordsDropped[k], units, why)
	}
}

// previewDropReasons explains the delivery's drop reasons as a preview
// sees them.
var previewDropReasons = map[string]string{
	"non_positive": "the net usage of the bucket is not > 0; CloudZero takes only values > 0",
	// A preview stops the exporter at once; in dry-run mode only a record
	// the exporter never sends is left then.
	"shutdown": "left unsent when the exporter stopped: net usage not > 0, which a running exporter drops as non_positive once the bucket closes (or, in open buckets, keys beyond records_per_day)",
}
