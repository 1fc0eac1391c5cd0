package main

// One GPU host's state, shared by every process that loads this library (and by
// simcluster's Python side, which creates it and acts out resets and reboots).
// The file is JSON, replaced whole by rename; writers hold an exclusive flock on
// "<file>.lock" around read-modify-write, so a mutation is never lost and a
// reader always sees a complete file.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

const stateVersion = 1

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

type ciState struct {
	ID        uint32 `json:"id"`
	ProfileID uint32 `json:"profile_id"`
	Start     uint32 `json:"start"`
	Size      uint32 `json:"size"`
	UUID      string `json:"uuid"`
}

type giState struct {
	ID               uint32    `json:"id"`
	ProfileID        uint32    `json:"profile_id"`
	Start            uint32    `json:"start"`
	Size             uint32    `json:"size"`
	ComputeInstances []ciState `json:"compute_instances"`
}

type migMode struct {
	Current uint32 `json:"current"`
	Pending uint32 `json:"pending"`
}

type gpu struct {
	Index        uint32    `json:"index"`
	UUID         string    `json:"uuid"`
	PciBusID     string    `json:"pci_bus_id"` // NVML's form: 00000000:BB:DD.F
	Mig          migMode   `json:"mig"`
	Clients      []string  `json:"clients"` // processes holding the GPU (fault knob): a reset is refused
	GpuInstances []giState `json:"gpu_instances"`
}

type model struct {
	Key                string               `json:"key"`
	Product            string               `json:"product"`
	PciDeviceID        uint32               `json:"pci_device_id"`
	PciSubsystemID     uint32               `json:"pci_subsystem_id"`
	MemoryMiB          uint64               `json:"memory_mib"`
	ComputeCapability  [2]int               `json:"compute_capability"`
	Architecture       uint32               `json:"architecture"` // NVML's nvmlDeviceArchitecture_t
	MigCapable         bool                 `json:"mig_capable"`
	ModeChange         string               `json:"mig_mode_change"` // "reset" (A100, A30) or "immediate" (H100 on)
	GpuInstanceProfile []gpuInstanceProfile `json:"gpu_instance_profiles"`
}

// faults are knobs a test sets on the host: what real hardware may do and cannot be asked to.
type faults struct {
	ResetKeepsPending bool `json:"reset_keeps_pending,omitempty"` // a GPU reset leaves a MIG mode change pending (a reboot is needed)
	CreateFails       bool `json:"create_fails,omitempty"`        // creating a GPU instance fails (NVML_ERROR_UNKNOWN)
}

type hostState struct {
	Faults            faults `json:"faults"`
	Version           int    `json:"version"`
	DriverVersion     string `json:"driver_version"`
	NvmlVersion       string `json:"nvml_version"`
	CudaDriverVersion int32  `json:"cuda_driver_version"`
	Model             model  `json:"model"`
	GPUs              []gpu  `json:"gpus"`
}

func readState(path string) (*hostState, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s hostState
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if s.Version != stateVersion {
		return nil, fmt.Errorf("%s: state version %d, this library reads %d", path, s.Version, stateVersion)
	}
	return &s, nil
}

func writeState(path string, s *hostState) error {
	raw, err := json.Marshal(s)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(raw, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// withLock runs f with the host's lock held exclusively.
func withLock(path string, f func() error) error {
	lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	for {
		err = syscall.Flock(int(lock.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		return err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	return f()
}

func (m *model) profile(id uint32) *gpuInstanceProfile {
	for i := range m.GpuInstanceProfile {
		if m.GpuInstanceProfile[i].ID == id {
			return &m.GpuInstanceProfile[i]
		}
	}
	return nil
}

func (p *gpuInstanceProfile) computeProfile(id uint32) *computeProfile {
	for i := range p.ComputeProfiles {
		if p.ComputeProfiles[i].ID == id {
			return &p.ComputeProfiles[i]
		}
	}
	return nil
}

func (g *gpu) gpuInstance(id uint32) *giState {
	for i := range g.GpuInstances {
		if g.GpuInstances[i].ID == id {
			return &g.GpuInstances[i]
		}
	}
	return nil
}

func (gi *giState) computeInstance(id uint32) *ciState {
	for i := range gi.ComputeInstances {
		if gi.ComputeInstances[i].ID == id {
			return &gi.ComputeInstances[i]
		}
	}
	return nil
}

func overlaps(aStart, aSize, bStart, bSize uint32) bool {
	return aStart < bStart+bSize && bStart < aStart+aSize
}
