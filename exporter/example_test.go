package exporter_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/cloudzero-otel/cloudzeroexporter/exporter"
	"github.com/cloudzero-otel/cloudzeroexporter/record"
)

// The Client on its own: send usage records to the sum endpoint.
func ExampleClient_Sum() {
	// A stand-in for https://api.cloudzero.com that prints what it receives.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Println(r.Method, r.URL.Path)
		fmt.Println(string(body))
	}))
	defer srv.Close()

	client := exporter.NewClient(&http.Client{Timeout: 30 * time.Second}, srv.URL, "my-api-key")
	err := client.Sum(context.Background(), "billing-records-processed", []record.Record{{
		Timestamp:   time.Date(2026, 11, 23, 6, 0, 0, 0, time.UTC),
		Granularity: record.Hourly,
		ElementName: "customer-42",
		Filter:      []record.Dimension{{Key: "custom:feature", Values: []string{"billing"}}},
		Value:       250,
	}})
	if exporter.IsPermanent(err) {
		fmt.Println("refused for good:", err)
	}
	// Output:
	// POST /unit-cost/v1/telemetry/allocation/billing-records-processed/sum
	// {"records":[{"timestamp":"2026-11-23T06:00:00Z","granularity":"HOURLY","element_name":"customer-42","filter":{"custom:feature":["billing"]},"value":"250"}]}
}
