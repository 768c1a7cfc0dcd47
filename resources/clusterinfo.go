package resources

// KindClusterInformation is Calico's ClusterInformation.
const KindClusterInformation = "ClusterInformation"

// ClusterInformation describes the cluster as Calico's components record
// it (its GUID, type and version, whether the datastore is ready). tortie
// keeps it as given and does not act on it.
type ClusterInformation struct {
	APIVersion string                 `json:"apiVersion"`
	Kind       string                 `json:"kind"`
	Metadata   Meta                   `json:"metadata"`
	Spec       ClusterInformationSpec `json:"spec" tortie:"stored"`
}

// ClusterInformationSpec mirrors Calico's.
type ClusterInformationSpec struct {
	ClusterGUID    string `json:"clusterGUID,omitempty"`
	ClusterType    string `json:"clusterType,omitempty"`
	CalicoVersion  string `json:"calicoVersion,omitempty"`
	DatastoreReady *bool  `json:"datastoreReady,omitempty"`
	Variant        string `json:"variant,omitempty"`
}

// Validate checks a ClusterInformation.
func (c *ClusterInformation) Validate() error {
	var errs []error
	if err := checkResourceName(c.Metadata.Name); err != nil {
		errs = append(errs, err)
	}
	return wrap(KindClusterInformation, c.Metadata.Name, errs)
}

func (c *ClusterInformation) key() string { return Prefix + "clusterinformations/" + c.Metadata.Name }
func (c *ClusterInformation) setVersion() {
	c.APIVersion, c.Kind = CalicoAPIVersion, KindClusterInformation
}
