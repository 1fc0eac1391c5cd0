// Command mig-oracle answers questions about MIG configs with NVIDIA's own
// code, so that the toolkit's Python parser and the simulator can be checked
// against it. It speaks JSON lines: one request object per line on stdin, one
// answer object per line on stdout, in the same order (blank lines are
// skipped). A caller keeps one process open for many requests.
//
//	{"op": "validate", "document": "<mig-parted config file>"}
//	{"op": "select", "document": "...", "config": "<name>", "devices": [{"index": 0, "device_id": "0x20B010DE"}]}
//	{"op": "tables"}
//	{"op": "version"}
//
// Nothing here decides anything itself: parsing, config selection and device
// matching are mig-parted v0.10.0's functions (linked against go-nvlib v0.12.0),
// profile names are go-nvlib's, and the MIG tables are go-nvml's recorded mocks.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"

	"github.com/sirupsen/logrus"

	nvdev "github.com/NVIDIA/go-nvlib/pkg/nvlib/device"
	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	v1 "github.com/NVIDIA/mig-parted/api/spec/v1"
	"github.com/NVIDIA/mig-parted/cmd/nvidia-mig-parted/assert"
	"github.com/NVIDIA/mig-parted/pkg/types"
)

type request struct {
	Op       string          `json:"op"`
	Document *string         `json:"document"`
	Config   string          `json:"config"`
	Devices  []deviceRequest `json:"devices"`
}

type deviceRequest struct {
	Index    *int   `json:"index"`
	DeviceID string `json:"device_id"`
}

type validateAnswer struct {
	Valid   bool     `json:"valid"`
	Error   string   `json:"error,omitempty"`
	Configs []string `json:"configs,omitempty"`
}

type selectedDevice struct {
	Index      int             `json:"index"`
	DeviceID   string          `json:"device_id"`
	Entry      *int            `json:"entry"`
	Matches    []int           `json:"matches"`
	MigEnabled *bool           `json:"mig_enabled"`
	MigDevices types.MigConfig `json:"mig_devices"`
}

type selectAnswer struct {
	Devices []selectedDevice `json:"devices"`
	Error   string           `json:"error"`
}

type errorAnswer struct {
	Error string `json:"error"`
}

// oracle holds what outlives one request: the scratch file mig-parted reads
// config files from, and the tables (computed once).
type oracle struct {
	scratch string
	tables  map[string]any
}

func main() {
	// mig-parted's packages log through logrus; keep stdout for answers only.
	logrus.SetOutput(os.Stderr)
	assert.GetLogger().SetOutput(os.Stderr)

	dir, err := os.MkdirTemp("", "mig-oracle-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "mig-oracle: %v\n", err)
		os.Exit(1)
	}
	defer os.RemoveAll(dir)
	o := &oracle{scratch: filepath.Join(dir, "config.yaml")}

	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	out := bufio.NewWriter(os.Stdout)
	encoder := json.NewEncoder(out)
	encoder.SetEscapeHTML(false)
	for {
		line, readErr := in.ReadBytes('\n')
		if len(trimSpace(line)) > 0 {
			if err := encoder.Encode(o.answer(line)); err != nil {
				_ = encoder.Encode(errorAnswer{Error: fmt.Sprintf("cannot encode the answer: %v", err)})
			}
			if err := out.Flush(); err != nil {
				os.Exit(1) // the reader went away
			}
		}
		if readErr == io.EOF {
			return
		}
		if readErr != nil {
			fmt.Fprintf(os.Stderr, "mig-oracle: reading stdin: %v\n", readErr)
			os.Exit(1)
		}
	}
}

func trimSpace(b []byte) []byte {
	start, end := 0, len(b)
	for start < end && (b[start] == ' ' || b[start] == '\t' || b[start] == '\r' || b[start] == '\n') {
		start++
	}
	for end > start && (b[end-1] == ' ' || b[end-1] == '\t' || b[end-1] == '\r' || b[end-1] == '\n') {
		end--
	}
	return b[start:end]
}

// answer never lets one bad request end the process: a panic in NVIDIA's
// code on odd input becomes an error answer.
func (o *oracle) answer(line []byte) (result any) {
	defer func() {
		if r := recover(); r != nil {
			result = errorAnswer{Error: fmt.Sprintf("panic: %v", r)}
		}
	}()
	var req request
	if err := json.Unmarshal(line, &req); err != nil {
		return errorAnswer{Error: fmt.Sprintf("bad request (not a JSON object): %v", err)}
	}
	switch req.Op {
	case "validate":
		if req.Document == nil {
			return errorAnswer{Error: "validate: missing 'document'"}
		}
		return o.validate(*req.Document)
	case "select":
		if req.Document == nil {
			return errorAnswer{Error: "select: missing 'document'"}
		}
		return o.selectDevices(*req.Document, req.Config, req.Devices)
	case "tables":
		if o.tables == nil {
			tables, err := recordedTables()
			if err != nil {
				return errorAnswer{Error: err.Error()}
			}
			o.tables = tables
		}
		return o.tables
	case "version":
		return versions()
	default:
		return errorAnswer{Error: fmt.Sprintf("unknown op %q (validate, select, tables, version)", req.Op)}
	}
}

// parse loads a config document the way `nvidia-mig-parted apply|assert -f FILE`
// does: assert.ParseConfigFile reads the file and runs sigs.k8s.io/yaml's
// Unmarshal (YAML converted to JSON, then v1.Spec's own UnmarshalJSON, which
// does all of mig-parted's validation). The document goes through a file so
// that the very same function runs; the error is ParseConfigFile's, which the
// CLI prints prefixed with "Error parsing config file: ".
func (o *oracle) parse(document string) (*v1.Spec, error) {
	if err := os.WriteFile(o.scratch, []byte(document), 0o600); err != nil {
		return nil, fmt.Errorf("mig-oracle: cannot write scratch file: %v", err)
	}
	return assert.ParseConfigFile(&assert.Flags{ConfigFile: o.scratch})
}

func (o *oracle) validate(document string) validateAnswer {
	spec, err := o.parse(document)
	if err != nil {
		return validateAnswer{Valid: false, Error: err.Error()}
	}
	names := make([]string, 0, len(spec.MigConfigs))
	for name := range spec.MigConfigs {
		names = append(names, name)
	}
	sort.Strings(names)
	return validateAnswer{Valid: true, Configs: names}
}

// selectDevices says which entry of the selected config applies to each device.
//
// The config is picked by assert.GetSelectedMigConfig (as apply and assert do:
// with one config in the file an empty name selects it). Matching mirrors
// assert.WalkSelectedMigConfigForEachGPU, which apply and assert both use but
// which enumerates the host's PCI devices itself: for every entry in file order,
// for every device, the entry applies when v1.MigConfigSpec.MatchesDeviceFilter
// (device id) and v1.MigConfigSpec.MatchesDevices (device index) are both true.
// Those two functions are mig-parted's own, called here. When several entries
// match one device, the walk visits each of them in order; apply sets each in
// turn, so the last one is what stays on the GPU, and assert keeps the verdict
// of the last one: "entry" is the last match, "matches" lists all of them.
// The device index is the GPU's position in mig-parted's enumeration (0..n-1).
func (o *oracle) selectDevices(document, config string, devices []deviceRequest) selectAnswer {
	spec, err := o.parse(document)
	if err != nil {
		return selectAnswer{Devices: []selectedDevice{}, Error: err.Error()}
	}
	migConfig, err := assert.GetSelectedMigConfig(&assert.Flags{SelectedConfig: config}, spec)
	if err != nil {
		return selectAnswer{Devices: []selectedDevice{}, Error: err.Error()}
	}

	type hardware struct {
		index int
		id    types.DeviceID
	}
	var hw []hardware
	for n, d := range devices {
		if d.Index == nil {
			return selectAnswer{Devices: []selectedDevice{}, Error: fmt.Sprintf("devices[%d]: missing 'index'", n)}
		}
		// A GPU's id as mig-parted builds it from PCI config space: device<<16 | vendor.
		packed, err := strconv.ParseUint(d.DeviceID, 0, 32)
		if err != nil {
			return selectAnswer{Devices: []selectedDevice{},
				Error: fmt.Sprintf("devices[%d]: device_id %q is not a 32-bit number such as 0x20B010DE", n, d.DeviceID)}
		}
		id := types.NewDeviceID(uint16(packed>>16), uint16(packed&0xFFFF))
		hw = append(hw, hardware{index: *d.Index, id: id})
	}

	result := make([]selectedDevice, len(hw))
	for n, gpu := range hw {
		result[n] = selectedDevice{Index: gpu.index, DeviceID: gpu.id.String(), Matches: []int{}}
	}
	for entry := range migConfig {
		mc := migConfig[entry]
		for n, gpu := range hw {
			if !mc.MatchesDeviceFilter(gpu.id) {
				continue
			}
			if !mc.MatchesDevices(gpu.index) {
				continue
			}
			e, enabled := entry, mc.MigEnabled
			result[n].Entry = &e
			result[n].Matches = append(result[n].Matches, entry)
			result[n].MigEnabled = &enabled
			result[n].MigDevices = mc.MigDevices
		}
	}
	return selectAnswer{Devices: result, Error: ""}
}

// model names one of go-nvml's mock GPUs. Only the A100 and A30 tables were
// recorded from real devices; the H100, H200 and B200 ones are made up by the
// mock's authors and must never be taken as the truth.
type model struct {
	key      string
	config   gpus.Config
	recorded bool
}

var models = []model{
	{"A100-SXM4-40GB", gpus.A100_SXM4_40GB, true},
	{"A100-PCIE-40GB", gpus.A100_PCIE_40GB, true},
	{"A100-SXM4-80GB", gpus.A100_SXM4_80GB, true},
	{"A100-PCIE-80GB", gpus.A100_PCIE_80GB, true},
	{"A30-PCIE-24GB", gpus.A30_PCIE_24GB, true},
	{"H100-SXM5-80GB", gpus.H100_SXM5_80GB, false},
	{"H200-SXM5-141GB", gpus.H200_SXM5_141GB, false},
	{"B200-SXM5-180GB", gpus.B200_SXM5_180GB, false},
}

type placement struct {
	Start uint32 `json:"start"`
	Size  uint32 `json:"size"`
}

type computeProfile struct {
	ID                  uint32 `json:"id"`
	Name                string `json:"name"`
	SliceCount          uint32 `json:"slice_count"`
	InstanceCount       uint32 `json:"instance_count"`
	MultiprocessorCount uint32 `json:"multiprocessor_count"`
}

type gpuInstanceProfile struct {
	ID                  uint32           `json:"id"`
	Name                string           `json:"name"`
	SliceCount          uint32           `json:"slice_count"`
	InstanceCount       uint32           `json:"instance_count"`
	MemoryMiB           uint64           `json:"memory_mib"`
	MultiprocessorCount uint32           `json:"multiprocessor_count"`
	CopyEngines         uint32           `json:"copy_engines"`
	Decoders            uint32           `json:"decoders"`
	Encoders            uint32           `json:"encoders"`
	JPEGs               uint32           `json:"jpegs"`
	OFAs                uint32           `json:"ofas"`
	P2P                 bool             `json:"p2p"`
	Placements          []placement      `json:"placements"`
	ComputeProfiles     []computeProfile `json:"compute_profiles"`
}

type modelTable struct {
	Product     string               `json:"product"`
	PCIDeviceID string               `json:"pci_device_id"`
	MemoryMiB   uint64               `json:"memory_mib"`
	Recorded    bool                 `json:"recorded"`
	Profiles    []gpuInstanceProfile `json:"profiles"`
}

// recordedTables reads every mock GPU through the NVML interface of go-nvml's
// mock server (what a device would answer) and names its profiles with
// go-nvlib's device library, the code mig-parted uses to turn NVML profile ids
// into strings such as "1g.10gb+me": a GPU instance profile is named after its
// full-size compute instance profile (C == G) with the shared engine profile.
func recordedTables() (map[string]any, error) {
	result := map[string]modelTable{}
	for _, m := range models {
		srv, err := server.New(server.WithGPUs(m.config))
		if err != nil {
			return nil, fmt.Errorf("mock %s: %v", m.key, err)
		}
		lib := nvdev.New(srv, nvdev.WithVerifySymbols(false))
		devices, err := lib.GetDevices()
		if err != nil || len(devices) != 1 {
			return nil, fmt.Errorf("mock %s: cannot list its device: %v", m.key, err)
		}
		device := devices[0]
		product, ret := device.GetName()
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("mock %s: GetName: %v", m.key, ret)
		}
		memory, ret := device.GetMemoryInfo()
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("mock %s: GetMemoryInfo: %v", m.key, ret)
		}
		pci, ret := device.GetPciInfo()
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("mock %s: GetPciInfo: %v", m.key, ret)
		}
		names, err := device.GetMigProfiles()
		if err != nil {
			return nil, fmt.Errorf("mock %s: go-nvlib GetMigProfiles: %v", m.key, err)
		}

		table := modelTable{
			Product:     product,
			PCIDeviceID: types.DeviceID(pci.PciDeviceId).String(),
			MemoryMiB:   memory.Total / (1024 * 1024),
			Recorded:    m.recorded,
			Profiles:    []gpuInstanceProfile{},
		}
		for gi := 0; gi < nvml.GPU_INSTANCE_PROFILE_COUNT; gi++ {
			info, ret := device.GetGpuInstanceProfileInfo(gi)
			if ret == nvml.ERROR_NOT_SUPPORTED || ret == nvml.ERROR_INVALID_ARGUMENT {
				continue
			}
			if ret != nvml.SUCCESS {
				return nil, fmt.Errorf("mock %s: GetGpuInstanceProfileInfo(%d): %v", m.key, gi, ret)
			}
			profile := gpuInstanceProfile{
				ID:                  info.Id,
				SliceCount:          info.SliceCount,
				InstanceCount:       info.InstanceCount,
				MemoryMiB:           info.MemorySizeMB,
				MultiprocessorCount: info.MultiprocessorCount,
				CopyEngines:         info.CopyEngineCount,
				Decoders:            info.DecoderCount,
				Encoders:            info.EncoderCount,
				JPEGs:               info.JpegCount,
				OFAs:                info.OfaCount,
				P2P:                 info.IsP2pSupported != 0,
				Placements:          []placement{},
				ComputeProfiles:     []computeProfile{},
			}
			for _, p := range names {
				pi := p.GetInfo()
				if pi.GIProfileID == gi && pi.C == pi.G && pi.CIEngProfileID == nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED {
					profile.Name = p.String()
					break
				}
			}
			if profile.Name == "" {
				return nil, fmt.Errorf("mock %s: go-nvlib gives no name for GPU instance profile %d", m.key, gi)
			}
			placements, ret := device.GetGpuInstancePossiblePlacements(&info)
			if ret != nvml.SUCCESS {
				return nil, fmt.Errorf("mock %s: GetGpuInstancePossiblePlacements(%d): %v", m.key, gi, ret)
			}
			for _, pl := range placements {
				profile.Placements = append(profile.Placements, placement{Start: pl.Start, Size: pl.Size})
			}
			profile.ComputeProfiles = computeProfiles(lib, m.config, gi, info, memory.Total)
			table.Profiles = append(table.Profiles, profile)
		}
		result[m.key] = table
	}
	return map[string]any{"models": result}, nil
}

// computeProfiles lists the recorded compute instance profiles of one GPU
// instance profile, named by go-nvlib (e.g. "1c.2g.10gb").
func computeProfiles(lib nvdev.Interface, config gpus.Config, gi int, info nvml.GpuInstanceProfileInfo, totalMemory uint64) []computeProfile {
	recorded := config.MIGProfiles.ComputeInstanceProfiles[gi]
	ids := make([]int, 0, len(recorded))
	for ci := range recorded {
		ids = append(ids, ci)
	}
	sort.Ints(ids)
	result := []computeProfile{}
	for _, ci := range ids {
		ciInfo := recorded[ci]
		name := ""
		if p, err := lib.NewMigProfile(gi, ci, nvml.COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED, info.MemorySizeMB, totalMemory); err == nil {
			name = p.String()
		}
		result = append(result, computeProfile{
			ID:                  ciInfo.Id,
			Name:                name,
			SliceCount:          ciInfo.SliceCount,
			InstanceCount:       ciInfo.InstanceCount,
			MultiprocessorCount: ciInfo.MultiprocessorCount,
		})
	}
	return result
}

// versions reports the modules actually linked, so a caller can check that the
// binary is the pinned one (go-nvlib v0.12.0 rather than mig-parted's own pin).
func versions() map[string]any {
	modules := map[string]string{}
	goVersion := ""
	if info, ok := debug.ReadBuildInfo(); ok {
		goVersion = info.GoVersion
		for _, dep := range info.Deps {
			version := dep.Version
			if dep.Replace != nil {
				version = dep.Replace.Version
			}
			modules[dep.Path] = version
		}
	}
	return map[string]any{"go": goVersion, "modules": modules}
}
