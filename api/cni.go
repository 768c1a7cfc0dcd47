package api

// CNI error codes (CNI spec, "Error" section); 100 and up are tortie's.
const (
	CodeUnknownContainer = 3
	CodeInvalidEnv       = 4
	CodeIOFailure        = 5
	CodeDecodingFailure  = 6
	CodeInvalidConfig    = 7
	CodeTryAgainLater    = 11
	CodeNotAvailable     = 50
	CodeExhausted        = 100
	CodeCheckFailed      = 101
)

// CNIError is a failure with a CNI error code.
type CNIError struct {
	Code uint   `json:"code"`
	Msg  string `json:"msg"`
}

func (e *CNIError) Error() string { return e.Msg }

// Attachment names one container's interface on a network.
type Attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifName"`
}

// CNIRequest is what the plugin sends for ADD, DEL and CHECK.
type CNIRequest struct {
	Attachment
	Network      string   `json:"network"`
	Netns        string   `json:"netns"`
	PodNamespace string   `json:"podNamespace,omitempty"`
	PodName      string   `json:"podName,omitempty"`
	Pools        []string `json:"pools,omitempty"`
	MTU          int      `json:"mtu,omitempty"`
}

// CNIResult is what ADD returns, enough for the plugin's CNI result.
type CNIResult struct {
	IfName  string `json:"ifName"`
	MAC     string `json:"mac"`
	Sandbox string `json:"sandbox"`
	Address string `json:"address"` // a.b.c.d/32
	Gateway string `json:"gateway"`
	MTU     int    `json:"mtu"`
}

// GCRequest lists the attachments the runtime still has on a network.
type GCRequest struct {
	Network string       `json:"network"`
	Valid   []Attachment `json:"valid"`
}
