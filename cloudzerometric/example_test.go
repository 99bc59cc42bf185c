package cloudzerometric_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/cloudzero-otel/cloudzeroexporter/cloudzerometric"
)

// An app counts requests per customer with the SDK; the exporter sends
// them to CloudZero as the "requests" stream.
func Example() {
	// A stand-in for https://api.cloudzero.com that prints what it receives.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Records []struct {
				Element string `json:"element_name"`
				Value   string `json:"value"`
			} `json:"records"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		for _, rec := range body.Records {
			fmt.Println(strings.TrimPrefix(r.URL.Path, "/unit-cost/v1/telemetry/allocation/"), rec.Element, rec.Value)
		}
	}))
	defer srv.Close()
	ctx := context.Background()

	cfg := cloudzerometric.NewConfig()
	cfg.ClientConfig.Endpoint = srv.URL // default: https://api.cloudzero.com
	cfg.APIKey = "my-api-key"           // e.g. configopaque.String(os.Getenv("CLOUDZERO_API_KEY"))
	cfg.Streams = []cloudzerometric.StreamConfig{{
		Name:        "requests",
		Metrics:     []string{"app.requests"},
		ElementName: "customer.id",
	}}
	exp, err := cloudzerometric.New(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)))

	requests, _ := mp.Meter("app").Int64Counter("app.requests")
	customer := metric.WithAttributes(attribute.String("customer.id", "customer-42"))
	requests.Add(ctx, 3, customer)
	requests.Add(ctx, 2, customer)

	// Shutdown exports what the SDK holds and sends what the ledger holds.
	if err := mp.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// requests/sum customer-42 5
}
