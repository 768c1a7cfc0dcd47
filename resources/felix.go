package resources

import (
	"fmt"
	"strings"
)

// KindFelixConfiguration is Calico's FelixConfiguration.
const KindFelixConfiguration = "FelixConfiguration"

// FelixConfiguration holds the settings of Calico's dataplane agent: for
// every node ("default"), one node ("node.<name>") or the nodes a
// nodeSelector picks. tortie keeps and checks every field; it does not act
// on them yet (its own settings are in its node configuration file).
type FelixConfiguration struct {
	APIVersion string                 `json:"apiVersion"`
	Kind       string                 `json:"kind"`
	Metadata   Meta                   `json:"metadata"`
	Spec       FelixConfigurationSpec `json:"spec" tortie:"stored"`
}

// FelixConfigurationSpec mirrors Calico's, grouped as Calico's reference
// groups the fields. Pointers keep "set to the zero value" apart from
// "not set"; lists that may be set empty on purpose (an empty list of
// failsafe ports means none) are pointers too.
type FelixConfigurationSpec struct {
	// NodeSelector picks the nodes a FelixConfiguration named neither
	// "default" nor "node.<name>" applies to.
	NodeSelector *string `json:"nodeSelector,omitempty" check:"selector"`

	// Process: Feature detection/overrides.
	FeatureDetectOverride string `json:"featureDetectOverride,omitempty" check:"featureOverrides"`
	FeatureGates          string `json:"featureGates,omitempty" check:"featureGates"`

	// Process: Go runtime.
	GoGCThreshold   *int `json:"goGCThreshold,omitempty" check:"min=-1"`
	GoMaxProcs      *int `json:"goMaxProcs,omitempty" check:"min=-1"`
	GoMemoryLimitMB *int `json:"goMemoryLimitMB,omitempty" check:"min=-1"`

	// Process: Health port and timeouts.
	HealthEnabled          *bool                   `json:"healthEnabled,omitempty"`
	HealthHost             *string                 `json:"healthHost,omitempty"`
	HealthPort             *int                    `json:"healthPort,omitempty" check:"min=0,max=65535"`
	HealthTimeoutOverrides []HealthTimeoutOverride `json:"healthTimeoutOverrides,omitempty"`

	// Process: Logging.
	LogActionRateLimit      *string `json:"logActionRateLimit,omitempty" check:"rateLimit"`
	LogActionRateLimitBurst *int    `json:"logActionRateLimitBurst,omitempty" check:"min=0,max=9999"`
	LogDebugFilenameRegex   string  `json:"logDebugFilenameRegex,omitempty" check:"regexp"`
	LogFilePath             string  `json:"logFilePath,omitempty"`
	LogPrefix               string  `json:"logPrefix,omitempty" check:"logPrefix"`
	LogSeverityFile         string  `json:"logSeverityFile,omitempty" check:"oneof=Trace|Debug|Info|Warning|Error|Fatal"`
	LogSeverityScreen       string  `json:"logSeverityScreen,omitempty" check:"oneof=Trace|Debug|Info|Warning|Error|Fatal"`
	LogSeveritySys          string  `json:"logSeveritySys,omitempty" check:"oneof=Trace|Debug|Info|Warning|Error|Fatal"`

	// Process: Prometheus metrics.
	PrometheusGoMetricsEnabled        *bool   `json:"prometheusGoMetricsEnabled,omitempty"`
	PrometheusMetricsCAFile           *string `json:"prometheusMetricsCAFile,omitempty"`
	PrometheusMetricsCertFile         *string `json:"prometheusMetricsCertFile,omitempty"`
	PrometheusMetricsClientAuth       string  `json:"prometheusMetricsClientAuth,omitempty" check:"oneof=RequireAndVerifyClientCert|RequireAnyClientCert|VerifyClientCertIfGiven|NoClientCert"`
	PrometheusMetricsEnabled          *bool   `json:"prometheusMetricsEnabled,omitempty"`
	PrometheusMetricsHost             string  `json:"prometheusMetricsHost,omitempty" check:"prometheusHost"`
	PrometheusMetricsKeyFile          *string `json:"prometheusMetricsKeyFile,omitempty"`
	PrometheusMetricsPort             *int    `json:"prometheusMetricsPort,omitempty" check:"min=0,max=65535"`
	PrometheusProcessMetricsEnabled   *bool   `json:"prometheusProcessMetricsEnabled,omitempty"`
	PrometheusWireGuardMetricsEnabled *bool   `json:"prometheusWireGuardMetricsEnabled,omitempty"`

	// Dataplane: Common.
	AllowIPIPPacketsFromWorkloads     *bool                `json:"allowIPIPPacketsFromWorkloads,omitempty"`
	AllowVXLANPacketsFromWorkloads    *bool                `json:"allowVXLANPacketsFromWorkloads,omitempty"`
	CgroupV2Path                      string               `json:"cgroupV2Path,omitempty"`
	ChainInsertMode                   string               `json:"chainInsertMode,omitempty" check:"oneofi=Insert|Append"`
	DataplaneDriver                   string               `json:"dataplaneDriver,omitempty"`
	DataplaneWatchdogTimeout          *Duration            `json:"dataplaneWatchdogTimeout,omitempty"`
	DefaultEndpointToHostAction       string               `json:"defaultEndpointToHostAction,omitempty" check:"oneof=Drop|Accept|Return"`
	DeviceRouteProtocol               *int                 `json:"deviceRouteProtocol,omitempty"`
	DeviceRouteSourceAddress          string               `json:"deviceRouteSourceAddress,omitempty" check:"ipv4"`
	DeviceRouteSourceAddressIPv6      string               `json:"deviceRouteSourceAddressIPv6,omitempty" check:"ipv6"`
	DisableConntrackInvalidCheck      *bool                `json:"disableConntrackInvalidCheck,omitempty"`
	EndpointStatusPathPrefix          string               `json:"endpointStatusPathPrefix,omitempty"`
	ExternalNodesList                 *[]string            `json:"externalNodesList,omitempty" check:"cidrv4"`
	FailsafeInboundHostPorts          *[]ProtoPort         `json:"failsafeInboundHostPorts,omitempty"`
	FailsafeOutboundHostPorts         *[]ProtoPort         `json:"failsafeOutboundHostPorts,omitempty"`
	FloatingIPs                       string               `json:"floatingIPs,omitempty" check:"oneof=Enabled|Disabled"`
	IPForwarding                      string               `json:"ipForwarding,omitempty" check:"oneof=Enabled|Disabled"`
	IPv4ElevatedRoutePriority         *int                 `json:"ipv4ElevatedRoutePriority,omitempty" check:"min=1,max=2147483646"`
	IPv4NormalRoutePriority           *int                 `json:"ipv4NormalRoutePriority,omitempty" check:"min=1,max=2147483646"`
	IPv6ElevatedRoutePriority         *int                 `json:"ipv6ElevatedRoutePriority,omitempty" check:"min=1,max=2147483646"`
	IPv6NormalRoutePriority           *int                 `json:"ipv6NormalRoutePriority,omitempty" check:"min=1,max=2147483646"`
	InterfaceExclude                  string               `json:"interfaceExclude,omitempty"`
	InterfacePrefix                   string               `json:"interfacePrefix,omitempty"`
	InterfaceRefreshInterval          *Duration            `json:"interfaceRefreshInterval,omitempty"`
	IPv6Support                       *bool                `json:"ipv6Support,omitempty"`
	IstioAmbientMode                  string               `json:"istioAmbientMode,omitempty" check:"oneof=Enabled|Disabled"`
	IstioDSCPMark                     *DSCP                `json:"istioDSCPMark,omitempty"`
	LiveMigrationRouteConvergenceTime *Duration            `json:"liveMigrationRouteConvergenceTime,omitempty"`
	MTUIfacePattern                   string               `json:"mtuIfacePattern,omitempty" check:"regexp"`
	NATOutgoingAddress                string               `json:"natOutgoingAddress,omitempty" check:"ipv4"`
	NATOutgoingExclusions             string               `json:"natOutgoingExclusions,omitempty" check:"oneof=IPPoolsOnly|IPPoolsAndHostIPs"`
	NATPortRange                      *Port                `json:"natPortRange,omitempty"`
	NFTablesMode                      string               `json:"nftablesMode,omitempty" check:"oneof=Disabled|Enabled|Auto"`
	NetlinkTimeout                    *Duration            `json:"netlinkTimeout,omitempty"`
	PolicySyncPathPrefix              string               `json:"policySyncPathPrefix,omitempty"`
	ProgramClusterRoutes              *string              `json:"programClusterRoutes,omitempty" check:"oneof=Enabled|Disabled"`
	RemoveExternalRoutes              *bool                `json:"removeExternalRoutes,omitempty"`
	RequireMTUFile                    *bool                `json:"requireMTUFile,omitempty"`
	RouteRefreshInterval              *Duration            `json:"routeRefreshInterval,omitempty"`
	RouteSource                       string               `json:"routeSource,omitempty" check:"oneofi=WorkloadIPs|CalicoIPAM"`
	RouteSyncDisabled                 *bool                `json:"routeSyncDisabled,omitempty"`
	RouteTableRange                   *RouteTableRange     `json:"routeTableRange,omitempty"`
	RouteTableRanges                  *[]RouteTableIDRange `json:"routeTableRanges,omitempty"`
	ServiceLoopPrevention             string               `json:"serviceLoopPrevention,omitempty" check:"oneof=Drop|Reject|Disabled"`
	SidecarAccelerationEnabled        *bool                `json:"sidecarAccelerationEnabled,omitempty"`
	UseInternalDataplaneDriver        *bool                `json:"useInternalDataplaneDriver,omitempty"`
	WorkloadSourceSpoofing            string               `json:"workloadSourceSpoofing,omitempty" check:"oneof=Disabled|Any"`

	// Dataplane: iptables.
	IpsetsRefreshInterval              *Duration `json:"ipsetsRefreshInterval,omitempty"`
	IptablesBackend                    string    `json:"iptablesBackend,omitempty" check:"oneof=Legacy|NFT|Auto"`
	IptablesFilterAllowAction          string    `json:"iptablesFilterAllowAction,omitempty" check:"oneof=Accept|Return"`
	IptablesFilterDenyAction           string    `json:"iptablesFilterDenyAction,omitempty" check:"oneof=Drop|Reject"`
	IptablesLockProbeInterval          *Duration `json:"iptablesLockProbeInterval,omitempty"`
	IptablesMangleAllowAction          string    `json:"iptablesMangleAllowAction,omitempty" check:"oneof=Accept|Return"`
	IptablesMarkMask                   *uint32   `json:"iptablesMarkMask,omitempty"`
	IptablesNATOutgoingInterfaceFilter string    `json:"iptablesNATOutgoingInterfaceFilter,omitempty" check:"ifaceFilter"`
	IptablesPostWriteCheckInterval     *Duration `json:"iptablesPostWriteCheckInterval,omitempty"`
	IptablesRefreshInterval            *Duration `json:"iptablesRefreshInterval,omitempty"`
	KubeNodePortRanges                 *[]Port   `json:"kubeNodePortRanges,omitempty"`
	MaxIpsetSize                       *int      `json:"maxIpsetSize,omitempty"`

	// Dataplane: nftables.
	NFTablesFilterAllowAction string    `json:"nftablesFilterAllowAction,omitempty" check:"oneof=Accept|Return"`
	NFTablesFilterDenyAction  string    `json:"nftablesFilterDenyAction,omitempty" check:"oneof=Drop|Reject"`
	NFTablesMangleAllowAction string    `json:"nftablesMangleAllowAction,omitempty" check:"oneof=Accept|Return"`
	NFTablesMarkMask          *uint32   `json:"nftablesMarkMask,omitempty"`
	NFTablesRefreshInterval   *Duration `json:"nftablesRefreshInterval,omitempty"`

	// Dataplane: eBPF.
	BPFAttachType                      string                `json:"bpfAttachType,omitempty" check:"oneof=TC|TCX"`
	BPFCTLBLogFilter                   string                `json:"bpfCTLBLogFilter,omitempty"`
	BPFConnectTimeLoadBalancing        string                `json:"bpfConnectTimeLoadBalancing,omitempty" check:"oneof=TCP|Enabled|Disabled"`
	BPFConnectTimeLoadBalancingEnabled *bool                 `json:"bpfConnectTimeLoadBalancingEnabled,omitempty"`
	BPFConntrackMode                   string                `json:"bpfConntrackMode,omitempty" check:"oneof=Auto|Userspace|BPFProgram"`
	BPFConntrackLogLevel               string                `json:"bpfConntrackLogLevel,omitempty" check:"oneof=Off|Debug"`
	BPFConntrackTimeouts               *BPFConntrackTimeouts `json:"bpfConntrackTimeouts,omitempty"`
	BPFDSROptoutCIDRs                  *[]string             `json:"bpfDSROptoutCIDRs,omitempty" check:"cidr"`
	BPFDataIfacePattern                string                `json:"bpfDataIfacePattern,omitempty" check:"regexp"`
	BPFDisableGROForIfaces             string                `json:"bpfDisableGROForIfaces,omitempty" check:"regexp"`
	BPFDisableUnprivileged             *bool                 `json:"bpfDisableUnprivileged,omitempty"`
	BPFEnabled                         *bool                 `json:"bpfEnabled,omitempty"`
	BPFEnforceRPF                      string                `json:"bpfEnforceRPF,omitempty" check:"oneofi=Disabled|Strict|Loose"`
	BPFExcludeCIDRsFromNAT             *[]string             `json:"bpfExcludeCIDRsFromNAT,omitempty" check:"cidr"`
	BPFExportBufferSizeMB              *int                  `json:"bpfExportBufferSizeMB,omitempty"`
	BPFExtToServiceConnmark            *int                  `json:"bpfExtToServiceConnmark,omitempty" check:"min=0,max=4294967295"`
	BPFExternalServiceMode             string                `json:"bpfExternalServiceMode,omitempty" check:"oneof=Tunnel|DSR"`
	BPFForceTrackPacketsFromIfaces     *[]string             `json:"bpfForceTrackPacketsFromIfaces,omitempty" check:"ifaceFilter"`
	BPFHostConntrackBypass             *bool                 `json:"bpfHostConntrackBypass,omitempty"`
	BPFHostNetworkedNATWithoutCTLB     string                `json:"bpfHostNetworkedNATWithoutCTLB,omitempty" check:"oneof=Enabled|Disabled"`
	BPFJITHardening                    string                `json:"bpfJITHardening,omitempty" check:"oneof=Auto|Strict"`
	BPFKubeProxyHealthzPort            *int                  `json:"bpfKubeProxyHealthzPort,omitempty" check:"min=0,max=65535"`
	BPFKubeProxyIptablesCleanupEnabled *bool                 `json:"bpfKubeProxyIptablesCleanupEnabled,omitempty"`
	BPFKubeProxyMinSyncPeriod          *Duration             `json:"bpfKubeProxyMinSyncPeriod,omitempty"`
	BPFL3IfacePattern                  string                `json:"bpfL3IfacePattern,omitempty" check:"regexp"`
	BPFLogFilters                      *map[string]string    `json:"bpfLogFilters,omitempty"`
	BPFLogLevel                        string                `json:"bpfLogLevel,omitempty" check:"oneof=Off|Info|Debug"`
	BPFMaglevMaxEndpointsPerService    *int                  `json:"bpfMaglevMaxEndpointsPerService,omitempty" check:"min=1,max=3000"`
	BPFMaglevMaxServices               *int                  `json:"bpfMaglevMaxServices,omitempty" check:"min=1,max=3000"`
	BPFMapSizeConntrack                *int                  `json:"bpfMapSizeConntrack,omitempty"`
	BPFMapSizeConntrackCleanupQueue    *int                  `json:"bpfMapSizeConntrackCleanupQueue,omitempty" check:"min=1"`
	BPFMapSizeConntrackScaling         string                `json:"bpfMapSizeConntrackScaling,omitempty" check:"oneofi=Disabled|DoubleIfFull"`
	BPFMapSizeIPSets                   *int                  `json:"bpfMapSizeIPSets,omitempty"`
	BPFMapSizeIfState                  *int                  `json:"bpfMapSizeIfState,omitempty"`
	BPFMapSizeNATAffinity              *int                  `json:"bpfMapSizeNATAffinity,omitempty"`
	BPFMapSizeNATBackend               *int                  `json:"bpfMapSizeNATBackend,omitempty"`
	BPFMapSizeNATFrontend              *int                  `json:"bpfMapSizeNATFrontend,omitempty"`
	BPFMapSizePerCPUConntrack          *int                  `json:"bpfMapSizePerCpuConntrack,omitempty"`
	BPFMapSizeRoute                    *int                  `json:"bpfMapSizeRoute,omitempty"`
	BPFPSNATPorts                      *Port                 `json:"bpfPSNATPorts,omitempty"`
	BPFPolicyDebugEnabled              *bool                 `json:"bpfPolicyDebugEnabled,omitempty"`
	BPFProfiling                       string                `json:"bpfProfiling,omitempty" check:"oneof=Enabled|Disabled"`
	BPFRedirectToPeer                  string                `json:"bpfRedirectToPeer,omitempty" check:"oneof=Enabled|Disabled"`

	// Dataplane: Windows.
	WindowsManageFirewallRules string `json:"windowsManageFirewallRules,omitempty" check:"oneof=Enabled|Disabled"`

	// Dataplane: OpenStack support.
	EndpointReportingDelay   *Duration `json:"endpointReportingDelay,omitempty"`
	EndpointReportingEnabled *bool     `json:"endpointReportingEnabled,omitempty"`
	MetadataAddr             string    `json:"metadataAddr,omitempty"`
	MetadataPort             *int      `json:"metadataPort,omitempty" check:"min=0,max=65535"`
	OpenstackRegion          string    `json:"openstackRegion,omitempty" check:"dnsLabel"`
	ReportingInterval        *Duration `json:"reportingInterval,omitempty"`
	ReportingTTL             *Duration `json:"reportingTTL,omitempty"`

	// Dataplane: XDP acceleration for iptables dataplane.
	GenericXDPEnabled  *bool     `json:"genericXDPEnabled,omitempty"`
	XDPEnabled         *bool     `json:"xdpEnabled,omitempty"`
	XDPRefreshInterval *Duration `json:"xdpRefreshInterval,omitempty"`

	// Overlay: VXLAN overlay.
	VXLANEnabled *bool `json:"vxlanEnabled,omitempty"`
	VXLANMTU     *int  `json:"vxlanMTU,omitempty"`
	VXLANMTUV6   *int  `json:"vxlanMTUV6,omitempty"`
	VXLANPort    *int  `json:"vxlanPort,omitempty"`
	VXLANVNI     *int  `json:"vxlanVNI,omitempty"`

	// Overlay: IP-in-IP.
	IPIPEnabled *bool `json:"ipipEnabled,omitempty"`
	IPIPMTU     *int  `json:"ipipMTU,omitempty"`

	// Overlay: Wireguard.
	WireguardEnabled               *bool     `json:"wireguardEnabled,omitempty"`
	WireguardEnabledV6             *bool     `json:"wireguardEnabledV6,omitempty"`
	WireguardHostEncryptionEnabled *bool     `json:"wireguardHostEncryptionEnabled,omitempty"`
	WireguardInterfaceName         string    `json:"wireguardInterfaceName,omitempty" check:"iface"`
	WireguardInterfaceNameV6       string    `json:"wireguardInterfaceNameV6,omitempty" check:"iface"`
	WireguardListeningPort         *int      `json:"wireguardListeningPort,omitempty" check:"min=1,max=65535"`
	WireguardListeningPortV6       *int      `json:"wireguardListeningPortV6,omitempty" check:"min=1,max=65535"`
	WireguardMTU                   *int      `json:"wireguardMTU,omitempty"`
	WireguardMTUV6                 *int      `json:"wireguardMTUV6,omitempty"`
	WireguardKeepAlive             *Duration `json:"wireguardKeepAlive,omitempty"`
	WireguardRoutingRulePriority   *int      `json:"wireguardRoutingRulePriority,omitempty" check:"min=1,max=32765"`
	WireguardThreadingEnabled      *bool     `json:"wireguardThreadingEnabled,omitempty"`

	// Flow logs: file reports.
	FlowLogsCollectorDebugTrace  *bool     `json:"flowLogsCollectorDebugTrace,omitempty"`
	FlowLogsFlushInterval        *Duration `json:"flowLogsFlushInterval,omitempty"`
	FlowLogsGoldmaneServer       *string   `json:"flowLogsGoldmaneServer,omitempty"`
	FlowLogsLocalReporter        *string   `json:"flowLogsLocalReporter,omitempty" check:"oneof=Enabled|Disabled"`
	FlowLogsPolicyEvaluationMode string    `json:"flowLogsPolicyEvaluationMode,omitempty" check:"oneof=None|Continuous"`

	// AWS integration.
	AWSSrcDstCheck string `json:"awsSrcDstCheck,omitempty" check:"oneof=DoNothing|Enable|Disable"`

	// Debug/test-only (generally unsupported).
	DebugDisableLogDropping          *bool     `json:"debugDisableLogDropping,omitempty"`
	DebugHost                        *string   `json:"debugHost,omitempty"`
	DebugMemoryProfilePath           string    `json:"debugMemoryProfilePath,omitempty"`
	DebugPort                        *int      `json:"debugPort,omitempty" check:"min=0,max=65535"`
	DebugSimulateCalcGraphHangAfter  *Duration `json:"debugSimulateCalcGraphHangAfter,omitempty"`
	DebugSimulateDataplaneApplyDelay *Duration `json:"debugSimulateDataplaneApplyDelay,omitempty"`
	DebugSimulateDataplaneHangAfter  *Duration `json:"debugSimulateDataplaneHangAfter,omitempty"`

	// Usage reporting.
	UsageReportingEnabled      *bool     `json:"usageReportingEnabled,omitempty"`
	UsageReportingInitialDelay *Duration `json:"usageReportingInitialDelay,omitempty"`
	UsageReportingInterval     *Duration `json:"usageReportingInterval,omitempty"`
}

// HealthTimeoutOverride sets the liveness timeout of one of Felix's parts.
type HealthTimeoutOverride struct {
	Name    string   `json:"name" check:"required,healthName"`
	Timeout Duration `json:"timeout"`
}

// ProtoPort is a protocol, a port and, optionally, a CIDR.
type ProtoPort struct {
	Protocol string `json:"protocol,omitempty" check:"required,oneof=TCP|UDP|SCTP"`
	Port     uint16 `json:"port"`
	Net      string `json:"net,omitempty" check:"cidr"`
}

// RouteTableRange is a range of routing table indices within 1-250.
type RouteTableRange struct {
	Min int `json:"min"`
	Max int `json:"max"`
}

func (r RouteTableRange) check(path string) []error {
	if r.Min < 1 || r.Max < r.Min || r.Max > 250 {
		return []error{fmt.Errorf("%s {min: %d, max: %d}: want a range of route table indices within 1-250", path, r.Min, r.Max)}
	}
	return nil
}

// RouteTableIDRange is a range of routing table indices.
type RouteTableIDRange struct {
	Min int64 `json:"min"`
	Max int64 `json:"max"`
}

func (r RouteTableIDRange) check(path string) []error {
	switch {
	case r.Min < 1:
		return []error{fmt.Errorf("%s.min %d: route table indices start at 1", path, r.Min)}
	case r.Min > r.Max:
		return []error{fmt.Errorf("%s {min: %d, max: %d}: min is above max", path, r.Min, r.Max)}
	case r.Max > 0xffffffff:
		return []error{fmt.Errorf("%s.max %d: at most 4294967295", path, r.Max)}
	}
	return nil
}

// BPFConntrackTimeouts are the eBPF dataplane's conntrack timeouts:
// durations, or Auto (the kernel's).
type BPFConntrackTimeouts struct {
	CreationGracePeriod *string `json:"creationGracePeriod,omitempty" check:"conntrackTimeout"`
	TCPSynSent          *string `json:"tcpSynSent,omitempty" check:"conntrackTimeout"`
	TCPEstablished      *string `json:"tcpEstablished,omitempty" check:"conntrackTimeout"`
	TCPFinsSeen         *string `json:"tcpFinsSeen,omitempty" check:"conntrackTimeout"`
	TCPResetSeen        *string `json:"tcpResetSeen,omitempty" check:"conntrackTimeout"`
	UDPTimeout          *string `json:"udpTimeout,omitempty" check:"conntrackTimeout"`
	GenericTimeout      *string `json:"genericTimeout,omitempty" check:"conntrackTimeout"`
	ICMPTimeout         *string `json:"icmpTimeout,omitempty" check:"conntrackTimeout"`
}

// Validate checks a FelixConfiguration as Calico does.
func (f *FelixConfiguration) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if err := checkResourceName(f.Metadata.Name); err != nil {
		errs = append(errs, err)
	}
	s := &f.Spec
	errs = append(errs, checkFields(s, "spec")...)
	if s.NodeSelector != nil && (f.Metadata.Name == "default" || strings.HasPrefix(f.Metadata.Name, "node.")) {
		bad("spec.nodeSelector must not be set on the %q FelixConfiguration (it applies to every node, or to one)", f.Metadata.Name)
	}
	if s.RouteTableRange != nil && s.RouteTableRanges != nil {
		bad("spec.routeTableRange and spec.routeTableRanges cannot both be set")
	}
	if s.RouteTableRanges != nil {
		n := int64(0)
		for _, r := range *s.RouteTableRanges {
			n += r.Max - r.Min + 1
		}
		if n > 0xffff {
			bad("spec.routeTableRanges: %d tables, at most 65535", n)
		}
	}
	if s.KubeNodePortRanges != nil {
		if len(*s.KubeNodePortRanges) > 7 {
			bad("spec.kubeNodePortRanges: at most 7 ranges, got %d", len(*s.KubeNodePortRanges))
		}
		for i, p := range *s.KubeNodePortRanges {
			if err := p.checkNumeric(fmt.Sprintf("spec.kubeNodePortRanges[%d]", i)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for name, p := range map[string]*Port{"spec.natPortRange": s.NATPortRange, "spec.bpfPSNATPorts": s.BPFPSNATPorts} {
		if p != nil {
			if err := p.checkNumeric(name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if s.BPFLogFilters != nil {
		for k := range *s.BPFLogFilters {
			if k != "all" && !ifaceRe.MatchString(k) {
				bad("spec.bpfLogFilters: key %q is not an interface name (or all)", k)
			}
		}
	}
	if len(s.OpenstackRegion) > 63-len("openstack-region-") {
		bad("spec.openstackRegion %q: at most %d characters", s.OpenstackRegion, 63-len("openstack-region-"))
	}
	sortErrors(errs)
	return wrap(KindFelixConfiguration, f.Metadata.Name, errs)
}

func (f *FelixConfiguration) key() string { return Prefix + "felixconfigurations/" + f.Metadata.Name }
func (f *FelixConfiguration) setVersion() {
	f.APIVersion, f.Kind = CalicoAPIVersion, KindFelixConfiguration
}
