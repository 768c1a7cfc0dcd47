package apiserver

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/tortie-net/tortie/endpoint"
)

// TestEndpointsWhileStopping: once tortied is stopping (its endpoints
// detached for the next run), adding or deleting an endpoint is answered
// 503 Service Unavailable, a state to try again after, not a failure of
// the request.
func TestEndpointsWhileStopping(t *testing.T) {
	m := endpoint.New(zaptest.NewLogger(t), nil, 1500, "")
	m.Detach()
	h := (&Server{Endpoints: m}).Handler()
	// A plain file as the namespace: it exists, as Add checks first, and
	// could be entered by nothing, should Add ever go further.
	netns := filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(netns, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/v1/endpoints", `{"name":"p1","netns":"` + netns + `","address":"10.1.0.1"}`},
		{"DELETE", "/v1/endpoints/shop/p1", ""},
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(c.method, c.path, strings.NewReader(c.body)))
		if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "stopping") {
			t.Errorf("%s %s while stopping: %d %s, want 503", c.method, c.path, w.Code, w.Body.String())
		}
	}
}
