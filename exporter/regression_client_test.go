package exporter

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Regression (found in review): cutBody (status.go) redacts the key in the first
// maxErrorBody+len(key) bytes, then cuts at maxErrorBody. When the body
// echoes the key twice (a proxy or debug page echoing request headers), the
// first redaction shortens the text, and the start of the second,
// partially read (so unredacted) occurrence moves inside the kept 512
// bytes: part of the API key ends up in StatusError.Body, hence in errors
// and logs.
func TestNoPartialAPIKeyInErrorBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Authorization")
		w.WriteHeader(400)
		// key at 0, second key starting at 520: the read stops at 512+len(key).
		_, _ = io.WriteString(w, key+strings.Repeat("x", 520-len(key))+key+" end")
	}))
	defer srv.Close()
	err := NewClient(srv.Client(), srv.URL, testKey).Post(context.Background(), OpSum, "s", nil)
	if err == nil {
		t.Fatal("expected an error")
	}
	for n := 8; n <= len(testKey); n++ {
		if strings.Contains(err.Error(), testKey[:n]) {
			t.Fatalf("the first %d characters of the API key are in the error: %v", n, err)
		}
	}
}
