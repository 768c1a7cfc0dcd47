package resources

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// EncodeCRD turns a stored record of a resource (the projectcalico.org/v3
// JSON Client writes) into the object Calico's Kubernetes datastore keeps
// for it: apiVersion crd.projectcalico.org/v1, the resource's own labels
// and annotations in the projectcalico.org/metadata annotation (the CRD
// object's labels and annotations are its storage's), and everything else
// as it is. A record that already is such an object (copied from a
// Kubernetes datastore) keeps its shape, less what servers fill in.
// DecodeStored reads both shapes back.
func EncodeCRD(value []byte) (map[string]any, error) {
	var obj map[string]any
	if err := json.Unmarshal(value, &obj); err != nil {
		return nil, fmt.Errorf("resource record: %s", cleanError(err))
	}
	if obj == nil {
		return nil, errors.New("resource record: want a mapping, got null")
	}
	md, _ := obj["metadata"].(map[string]any)
	if md == nil {
		return nil, errors.New("resource record: no metadata")
	}
	for _, f := range serverMetadata {
		delete(md, f)
	}
	if obj["apiVersion"] == CRDAPIVersion {
		return obj, nil
	}
	own := map[string]any{}
	if l, ok := md["labels"]; ok && l != nil {
		own["labels"] = l
	}
	if a, ok := md["annotations"]; ok && a != nil {
		own["annotations"] = a
	}
	delete(md, "labels")
	delete(md, "annotations")
	if len(own) > 0 {
		b, err := json.Marshal(own)
		if err != nil {
			return nil, err
		}
		md["annotations"] = map[string]any{calicoMetadataAnnotation: string(b)}
	}
	obj["apiVersion"] = CRDAPIVersion
	return obj, nil
}

// decodeCRDRecord decodes a stored record in the shape of a CRD object
// through the same checks as input: unknown fields are refused, and the
// resource's labels come from Calico's metadata annotation.
func decodeCRDRecord(js []byte) (Object, error) {
	h, err := readHeader(js)
	if err != nil {
		return nil, err
	}
	return decodeResource(js, h)
}

// isCRDRecord says whether a stored record is a CRD object (apiVersion
// crd.projectcalico.org/v1) rather than the v3 JSON Client writes.
func isCRDRecord(js []byte) (bool, error) {
	if !bytes.Contains(js, []byte(CRDAPIVersion)) {
		return false, nil
	}
	var h struct {
		APIVersion any `json:"apiVersion"`
	}
	if err := json.Unmarshal(js, &h); err != nil {
		return false, errors.New(cleanError(err))
	}
	return h.APIVersion == CRDAPIVersion, nil
}

// KindPrefix is the datastore directory (a key prefix ending in "/") the
// records of kind are stored under, or "" for a kind tortie does not know.
func KindPrefix(kind string) string { return kindPrefix(kind) }
