// Package apiserver serves tortied's control API (package api is its wire
// contract and client): JSON over HTTP on a root-only unix socket. The CNI
// plugin, the lab and tortiectl add and delete pod endpoints, forward CNI
// commands, apply resources and read endpoints, routes, IPAM, counters and the
// flow table, and trace packets, through it.
package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/cni"
	"github.com/tortie-net/tortie/endpoint"
	"github.com/tortie-net/tortie/fib"
	"github.com/tortie-net/tortie/ipam"
	"github.com/tortie-net/tortie/resources"
	"github.com/tortie-net/tortie/router"
)

// Server serves the API.
type Server struct {
	Endpoints *endpoint.Manager
	Router    *router.Router
	Status    func() api.Status
	// CNI serves the plugin's commands (nil: not served).
	CNI *cni.Service
	// Resources reads and writes cluster resources (nil: no datastore).
	Resources *resources.Client
	// IPAM shows blocks and handles (nil: no datastore).
	IPAM *ipam.IPAM
	// BGP reports the speaker (nil: BGP is not the route source).
	BGP func() (api.BGPStatus, error)
	// Invalid lists the datastore records that do not decode (nil: no
	// datastore).
	Invalid func(context.Context) ([]api.InvalidRecord, error)
}

// fail replies with err, keeping a CNI code if it has one.
func fail(w http.ResponseWriter, status int, err error) {
	var ce *api.CNIError
	if errors.As(err, &ce) {
		reply(w, status, api.Error{Error: ce.Msg, Code: ce.Code})
		return
	}
	reply(w, status, api.Error{Error: err.Error()})
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { reply(w, 200, s.Status()) })
	mux.HandleFunc("GET /v1/endpoints", func(w http.ResponseWriter, r *http.Request) { reply(w, 200, s.Endpoints.List()) })
	mux.HandleFunc("POST /v1/endpoints", func(w http.ResponseWriter, r *http.Request) {
		var spec endpoint.Spec
		if err := decode(r, &spec); err != nil {
			reply(w, http.StatusBadRequest, api.Error{Error: "bad endpoint spec: " + err.Error()})
			return
		}
		info, err := s.Endpoints.Add(spec)
		switch {
		case errors.Is(err, endpoint.ErrExists):
			reply(w, http.StatusConflict, api.Error{Error: err.Error()})
		case errors.Is(err, endpoint.ErrDetached):
			reply(w, http.StatusServiceUnavailable, api.Error{Error: err.Error()})
		case err != nil:
			reply(w, http.StatusUnprocessableEntity, api.Error{Error: err.Error()})
		default:
			reply(w, http.StatusCreated, info)
		}
	})
	// A pod's endpoint is deleted by its key, "namespace/name".
	mux.HandleFunc("DELETE /v1/endpoints/{key...}", func(w http.ResponseWriter, r *http.Request) {
		err := s.Endpoints.Delete(r.PathValue("key"))
		switch {
		case errors.Is(err, endpoint.ErrDetached):
			reply(w, http.StatusServiceUnavailable, api.Error{Error: err.Error()})
			return
		case err != nil:
			reply(w, http.StatusInternalServerError, api.Error{Error: err.Error()})
			return
		}
		reply(w, http.StatusOK, struct{}{})
	})
	if s.CNI != nil {
		s.cniRoutes(mux)
	}
	if s.Resources != nil {
		s.resourceRoutes(mux)
	}
	mux.HandleFunc("GET /v1/routes", func(w http.ResponseWriter, r *http.Request) { reply(w, 200, s.routes()) })
	mux.HandleFunc("GET /v1/bgp", func(w http.ResponseWriter, r *http.Request) {
		if s.BGP == nil {
			reply(w, 200, api.BGPStatus{Peers: []api.PeerStatus{}, Advertised: []string{}})
			return
		}
		st, err := s.BGP()
		if err != nil {
			fail(w, http.StatusServiceUnavailable, err)
			return
		}
		reply(w, 200, st)
	})
	mux.HandleFunc("GET /v1/invalid", func(w http.ResponseWriter, r *http.Request) {
		if s.Invalid == nil {
			reply(w, 200, []api.InvalidRecord{})
			return
		}
		recs, err := s.Invalid(r.Context())
		if err != nil {
			fail(w, http.StatusServiceUnavailable, err)
			return
		}
		reply(w, 200, recs)
	})
	s.traceRoutes(mux)
	mux.HandleFunc("GET /v1/counters", func(w http.ResponseWriter, r *http.Request) { reply(w, 200, s.Router.Stats()) })
	return mux
}

func (s *Server) routes() []api.Route {
	names := map[uint32]string{}
	for _, p := range s.Router.Ports() {
		names[p.ID] = p.Config().Name
	}
	var out []api.Route
	for _, r := range s.Router.FIB().Load().Routes() {
		a := api.Route{Prefix: r.Prefix.String(), Kind: r.NextHop.Kind.String(), Source: r.Source.String()}
		switch r.NextHop.Kind {
		case fib.KindRemote:
			a.Mode, a.Node, a.NodeName = r.NextHop.Mode.String(), netip.AddrFrom4(r.NextHop.Node).String(), r.NextHop.NodeName
		case fib.KindLocal:
			a.Port = names[r.NextHop.Port]
		}
		out = append(out, a)
	}
	return out
}

// Listen opens the API's unix socket at path, readable by root only. A
// stale socket file from a previous run is replaced. Serve it with Serve.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("api: listen %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Serve serves h on l until the returned server is closed; requests carry
// ctx as their base context.
func Serve(ctx context.Context, l net.Listener, h http.Handler) *http.Server {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() { _ = srv.Serve(l) }()
	return srv
}
