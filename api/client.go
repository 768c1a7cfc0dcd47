package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Client talks to a tortied socket. It is safe for concurrent use.
type Client struct {
	Socket string
	hc     *http.Client
}

// requestTimeout bounds an ordinary call to tortied.
const requestTimeout = 30 * time.Second

// cniTimeout bounds a CNI call. ADDs on a node queue behind one another
// for the node's IPAM lock, as with Calico's, so a burst of pods (a
// Deployment scaled up, a node drained onto this one) can keep an ADD
// waiting well beyond an ordinary call. The kubelet gives a sandbox two
// minutes (--runtime-request-timeout) and containerd kills the plugin when
// that ends; the plugin gives up a little earlier, so that the kubelet's
// event says why.
const cniTimeout = 110 * time.Second

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	return &Client{Socket: path, hc: &http.Client{
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
}

func (c *Client) do(method, path string, in, out any) error {
	return c.doTimeout(requestTimeout, method, path, in, out)
}

func (c *Client) doTimeout(timeout time.Duration, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	return c.send(timeout, method, path, body, out)
}

func (c *Client) doRaw(method, path string, body io.Reader, out any) error {
	return c.send(requestTimeout, method, path, body, out)
}

func (c *Client) send(timeout time.Duration, method, path string, body io.Reader, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://tortied"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("tortied at %s did not answer within %v: %w", c.Socket, timeout, err)
	}
	if err != nil {
		return fmt.Errorf("tortied at %s is not reachable: %w", c.Socket, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e Error
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			if e.Code != 0 {
				return &CNIError{Code: e.Code, Msg: e.Error}
			}
			return errors.New(e.Error)
		}
		return fmt.Errorf("tortied: %s", resp.Status)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// AddEndpoint attaches a pod endpoint.
func (c *Client) AddEndpoint(s EndpointSpec) (info EndpointInfo, err error) {
	err = c.do("POST", "/v1/endpoints", s, &info)
	return
}

// DeleteEndpoint removes a pod endpoint by its key (EndpointSpec.Key: the
// name, or "namespace/name" for a pod's).
func (c *Client) DeleteEndpoint(key string) error {
	return c.do("DELETE", "/v1/endpoints/"+key, nil, nil)
}

// Endpoints lists the node's pod endpoints.
func (c *Client) Endpoints() (out []EndpointInfo, err error) {
	err = c.do("GET", "/v1/endpoints", nil, &out)
	return
}

// Routes lists the FIB.
func (c *Client) Routes() (out []Route, err error) {
	err = c.do("GET", "/v1/routes", nil, &out)
	return
}

// Counters returns the router's counters.
func (c *Client) Counters() (out Counters, err error) {
	err = c.do("GET", "/v1/counters", nil, &out)
	return
}

// BGP reports the BGP speaker and its sessions.
func (c *Client) BGP() (out BGPStatus, err error) {
	err = c.do("GET", "/v1/bgp", nil, &out)
	return
}

// Status summarises the node.
func (c *Client) Status() (out Status, err error) {
	err = c.do("GET", "/v1/status", nil, &out)
	return
}

// CNIAdd forwards a plugin's ADD.
func (c *Client) CNIAdd(r CNIRequest) (out CNIResult, err error) {
	err = c.doTimeout(cniTimeout, "POST", "/v1/cni/add", r, &out)
	return
}

// CNIDel forwards a plugin's DEL.
func (c *Client) CNIDel(r CNIRequest) error {
	return c.doTimeout(cniTimeout, "POST", "/v1/cni/del", r, nil)
}

// CNICheck forwards a plugin's CHECK.
func (c *Client) CNICheck(r CNIRequest) error {
	return c.doTimeout(cniTimeout, "POST", "/v1/cni/check", r, nil)
}

// CNIStatus forwards a plugin's STATUS.
func (c *Client) CNIStatus() error { return c.do("GET", "/v1/cni/status", nil, nil) }

// CNIGC forwards a plugin's GC.
func (c *Client) CNIGC(r GCRequest) error {
	return c.doTimeout(cniTimeout, "POST", "/v1/cni/gc", r, nil)
}

// Apply sends resource manifests (YAML or JSON) to tortied and returns how
// many objects were applied.
func (c *Client) Apply(manifest string) (n int, err error) {
	r, err := c.ApplyReport(manifest)
	return r.Applied, err
}

// ApplyReport sends resource manifests (YAML or JSON) to tortied and
// returns how many objects were applied and the warnings about fields
// tortie keeps without acting on them. A tortied that predates warnings
// answers with none.
func (c *Client) ApplyReport(manifest string) (out ApplyResult, err error) {
	err = c.doRaw("POST", "/v1/apply?warnings=1", strings.NewReader(manifest), &out)
	return
}

// Get lists resources of a kind, decoded into out (raw JSON objects).
func (c *Client) Get(kind string, out any) error { return c.do("GET", "/v1/resources/"+kind, nil, out) }

// DeleteResource removes one resource.
func (c *Client) DeleteResource(kind, name string) error {
	return c.do("DELETE", "/v1/resources/"+kind+"/"+name, nil, nil)
}

// LabelRequest sets and removes labels of one resource (NAME, or
// NAMESPACE/NAME for a namespaced kind).
type LabelRequest struct {
	Kind   string            `json:"kind"`
	Name   string            `json:"name"`
	Set    map[string]string `json:"set,omitempty"`
	Remove []string          `json:"remove,omitempty"`
}

// Label sets and removes labels of a resource; out receives the resource
// as stored.
func (c *Client) Label(r LabelRequest, out any) error { return c.do("POST", "/v1/label", r, out) }

// IPAM returns blocks and handles.
func (c *Client) IPAM() (out IPAMView, err error) {
	err = c.do("GET", "/v1/ipam", nil, &out)
	return
}

// InvalidRecords lists the datastore records tortied skips as invalid.
func (c *Client) InvalidRecords() (out []InvalidRecord, err error) {
	err = c.do("GET", "/v1/invalid", nil, &out)
	return
}

// Trace asks what tortied would do with a packet, without sending one.
func (c *Client) Trace(q TraceRequest) (t Trace, err error) {
	err = c.do("POST", "/v1/trace", q, &t)
	return
}

// Flows copies at most limit entries of the flow table (0: the server's
// default).
func (c *Client) Flows(limit int) (f Flows, err error) {
	path := "/v1/flows"
	if limit > 0 {
		path += "?limit=" + strconv.Itoa(limit)
	}
	err = c.do("GET", path, nil, &f)
	return
}
