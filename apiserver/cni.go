package apiserver

import (
	"context"
	"errors"
	"net/http"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/cni"
	"github.com/tortie-net/tortie/ipam"
	"github.com/tortie-net/tortie/resources"
)

func (s *Server) cniRoutes(mux *http.ServeMux) {
	cmd := func(path string, run func(context.Context, cni.Request) (any, error)) {
		mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
			var req cni.Request
			if err := decode(r, &req); err != nil {
				fail(w, http.StatusBadRequest, &cni.Error{Code: cni.CodeInvalidConfig, Msg: "bad request: " + err.Error()})
				return
			}
			out, err := run(r.Context(), req)
			if err != nil {
				fail(w, http.StatusUnprocessableEntity, err)
				return
			}
			reply(w, http.StatusOK, out)
		})
	}
	cmd("/v1/cni/add", func(ctx context.Context, r cni.Request) (any, error) { return s.CNI.Add(ctx, r) })
	cmd("/v1/cni/del", func(ctx context.Context, r cni.Request) (any, error) { return struct{}{}, s.CNI.Del(ctx, r) })
	cmd("/v1/cni/check", func(ctx context.Context, r cni.Request) (any, error) { return struct{}{}, s.CNI.Check(ctx, r) })
	mux.HandleFunc("GET /v1/cni/status", func(w http.ResponseWriter, r *http.Request) {
		if err := s.CNI.Status(r.Context()); err != nil {
			fail(w, http.StatusServiceUnavailable, err)
			return
		}
		reply(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("POST /v1/cni/gc", func(w http.ResponseWriter, r *http.Request) {
		var req cni.GCRequest
		if err := decode(r, &req); err != nil {
			fail(w, http.StatusBadRequest, &cni.Error{Code: cni.CodeInvalidConfig, Msg: "bad request: " + err.Error()})
			return
		}
		if err := s.CNI.GC(r.Context(), req); err != nil {
			fail(w, http.StatusUnprocessableEntity, err)
			return
		}
		reply(w, http.StatusOK, struct{}{})
	})
}

func (s *Server) resourceRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/apply", func(w http.ResponseWriter, r *http.Request) {
		objs, err := resources.Decode(r.Body)
		if err != nil {
			fail(w, http.StatusBadRequest, err)
			return
		}
		if err := s.Resources.Apply(r.Context(), objs); err != nil {
			fail(w, http.StatusUnprocessableEntity, err)
			return
		}
		// Clients that predate warnings decode the reply as a map of
		// numbers: they get only what they ask for.
		if r.URL.Query().Get("warnings") == "" {
			reply(w, http.StatusOK, map[string]int{"applied": len(objs)})
			return
		}
		reply(w, http.StatusOK, api.ApplyResult{Applied: len(objs), Warnings: resources.Warnings(objs)})
	})
	mux.HandleFunc("GET /v1/resources/{kind}", func(w http.ResponseWriter, r *http.Request) {
		kind, err := resources.KindOf(r.PathValue("kind"))
		if err != nil {
			fail(w, http.StatusNotFound, err)
			return
		}
		out, err := s.Resources.List(r.Context(), kind)
		if err != nil {
			fail(w, http.StatusServiceUnavailable, err)
			return
		}
		reply(w, http.StatusOK, out)
	})
	del := func(w http.ResponseWriter, r *http.Request, name string) {
		kind, err := resources.KindOf(r.PathValue("kind"))
		if err == nil {
			err = s.Resources.Delete(r.Context(), kind, name)
		}
		if err != nil {
			fail(w, http.StatusUnprocessableEntity, err)
			return
		}
		reply(w, http.StatusOK, struct{}{})
	}
	mux.HandleFunc("DELETE /v1/resources/{kind}/{name}", func(w http.ResponseWriter, r *http.Request) {
		del(w, r, r.PathValue("name"))
	})
	// Namespaced resources: NAMESPACE/NAME.
	mux.HandleFunc("DELETE /v1/resources/{kind}/{namespace}/{name}", func(w http.ResponseWriter, r *http.Request) {
		del(w, r, r.PathValue("namespace")+"/"+r.PathValue("name"))
	})
	mux.HandleFunc("POST /v1/label", func(w http.ResponseWriter, r *http.Request) {
		var req api.LabelRequest
		if err := decode(r, &req); err != nil {
			fail(w, http.StatusBadRequest, err)
			return
		}
		kind, err := resources.KindOf(req.Kind)
		if err != nil {
			fail(w, http.StatusNotFound, err)
			return
		}
		if kind != resources.KindWorkloadEndpoint {
			fail(w, http.StatusUnprocessableEntity, errors.New("label: only workloadendpoints can be labelled (edit and apply other kinds)"))
			return
		}
		out, err := s.Resources.LabelWorkloadEndpoint(r.Context(), req.Name, req.Set, req.Remove)
		if err != nil {
			fail(w, http.StatusUnprocessableEntity, err)
			return
		}
		reply(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /v1/ipam", func(w http.ResponseWriter, r *http.Request) {
		blocks, err := s.IPAM.Blocks(r.Context())
		if err != nil {
			fail(w, http.StatusServiceUnavailable, err)
			return
		}
		handles, err := s.IPAM.Handles(r.Context())
		if err != nil {
			fail(w, http.StatusServiceUnavailable, err)
			return
		}
		reply(w, http.StatusOK, ipamView(blocks, handles))
	})
}

// ipamView converts IPAM's records to the API's view of them.
func ipamView(blocks []*ipam.Block, handles []ipam.Handle) api.IPAMView {
	v := api.IPAMView{Blocks: []api.IPAMBlock{}, Handles: []api.IPAMHandle{}}
	for _, b := range blocks {
		ab := api.IPAMBlock{CIDR: b.CIDR.String(), Affinity: b.Affinity, Allocs: make([]api.IPAMAlloc, len(b.Allocs))}
		for i, a := range b.Allocs {
			ab.Allocs[i] = api.IPAMAlloc{Handle: a.Handle, Node: a.Node, Released: a.Released}
		}
		v.Blocks = append(v.Blocks, ab)
	}
	for _, h := range handles {
		ah := api.IPAMHandle{ID: h.ID, Node: h.Node, IPs: make([]string, len(h.IPs)), Attrs: h.Attrs}
		for i, ip := range h.IPs {
			ah.IPs[i] = ip.String()
		}
		v.Handles = append(v.Handles, ah)
	}
	return v
}
