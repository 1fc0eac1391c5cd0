// Command nvml is built with -buildmode=c-shared into libnvidia-ml.so.1: NVML's
// C ABI for a GPU host that has no GPU. Every answer comes from one state file
// (SIMCLUSTER_NVML_STATE) that `simcluster nvml init` writes from NVIDIA's MIG
// tables (go-nvml's recorded tables; the MIG user guide's for newer models);
// every mutation (MIG mode, GPU and compute instances) is written back to that
// file under its lock, so the next process, as on a real host, sees it.
//
// The functions exported here are those that nvidia-mig-parted (apply, assert,
// export) and go-nvlib call on a MIG host; every other NVML entry point is
// generated at build time from nvml.h and answers NVML_ERROR_NOT_SUPPORTED.
package main

/*
#cgo CFLAGS: -DNVML_NO_UNVERSIONED_FUNC_DEFS=1
#include <stdlib.h>
#include "nvml.h"
*/
import "C"

import (
	"crypto/rand"
	"fmt"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

func main() {}

const stateEnv = "SIMCLUSTER_NVML_STATE"

const (
	migDisable = 0
	migEnable  = 1
)

type ret = C.nvmlReturn_t

const (
	success                   ret = C.NVML_SUCCESS
	errUninitialized          ret = C.NVML_ERROR_UNINITIALIZED
	errInvalidArgument        ret = C.NVML_ERROR_INVALID_ARGUMENT
	errNotSupported           ret = C.NVML_ERROR_NOT_SUPPORTED
	errNotFound               ret = C.NVML_ERROR_NOT_FOUND
	errInsufficientSize       ret = C.NVML_ERROR_INSUFFICIENT_SIZE
	errDriverNotLoaded        ret = C.NVML_ERROR_DRIVER_NOT_LOADED
	errResetRequired          ret = C.NVML_ERROR_RESET_REQUIRED
	errInUse                  ret = C.NVML_ERROR_IN_USE
	errInsufficientRes        ret = C.NVML_ERROR_INSUFFICIENT_RESOURCES
	errUnknown                ret = C.NVML_ERROR_UNKNOWN
	computeEngineShared           = C.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
	gpuInstanceProfileCount       = C.NVML_GPU_INSTANCE_PROFILE_COUNT
	computeProfileCount           = C.NVML_COMPUTE_INSTANCE_PROFILE_COUNT
	computeEngineProfileCount     = C.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_COUNT
)

// -- handles ------------------------------------------------------------------------------------------------------
// NVML hands out opaque pointers. Ours are small blocks of C memory, one per
// object for the life of the process, mapped to what they name.

const (
	kindDevice = iota
	kindGpuInstance
	kindComputeInstance
	kindMigDevice
)

type handleKey struct {
	kind int
	gpu  uint32
	gi   uint32
	ci   uint32
}

var (
	mu        sync.Mutex
	handles   = map[handleKey]unsafe.Pointer{}
	keys      = map[uintptr]handleKey{}
	initCount int
	statePath string
	cached    *hostState
	cachedKey [4]int64
)

func handleFor(k handleKey) unsafe.Pointer {
	if p, ok := handles[k]; ok {
		return p
	}
	p := C.malloc(16)
	handles[k] = p
	keys[uintptr(p)] = k
	return p
}

// go-nvml's nvml.h wraps each handle pointer in a one-field struct (the same C ABI as the pointer).
func devHandle(p unsafe.Pointer) C.nvmlDevice_t {
	return C.nvmlDevice_t{handle: (*C.struct_nvmlDevice_st)(p)}
}

func giHandle(p unsafe.Pointer) C.nvmlGpuInstance_t {
	return C.nvmlGpuInstance_t{handle: (*C.struct_nvmlGpuInstance_st)(p)}
}

func ciHandle(p unsafe.Pointer) C.nvmlComputeInstance_t {
	return C.nvmlComputeInstance_t{handle: (*C.struct_nvmlComputeInstance_st)(p)}
}

func keyOf(p unsafe.Pointer, kinds ...int) (handleKey, bool) {
	k, ok := keys[uintptr(p)]
	if !ok {
		return k, false
	}
	for _, kind := range kinds {
		if k.kind == kind {
			return k, true
		}
	}
	return k, false
}

// -- state --------------------------------------------------------------------------------------------------------

// statKey identifies one version of the state file: it is replaced whole (rename), never written in place.
func statKey(path string) ([4]int64, error) {
	info, err := os.Stat(path)
	if err != nil {
		return [4]int64{}, err
	}
	st := info.Sys().(*syscall.Stat_t)
	return [4]int64{int64(st.Ino), st.Size, st.Mtim.Sec, st.Mtim.Nsec}, nil
}

// current is the state as the file holds it now (parsed again only when the file changed).
func current() (*hostState, ret) {
	if initCount == 0 {
		return nil, errUninitialized
	}
	key, err := statKey(statePath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "simcluster NVML: %v\n", err)
		return nil, errUnknown
	}
	if cached != nil && key == cachedKey {
		return cached, success
	}
	s, err := readState(statePath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "simcluster NVML: %v\n", err)
		return nil, errUnknown
	}
	cached, cachedKey = s, key
	return s, success
}

// mutate applies f to the freshest state under the host's lock and writes the result when f succeeds. The
// state written stays this process's cached copy, so the next call does not parse the file again.
func mutate(f func(s *hostState) ret) ret {
	if initCount == 0 {
		return errUninitialized
	}
	result := success
	err := withLock(statePath, func() error {
		s, r := current()
		if r != success {
			return fmt.Errorf("%s cannot be read", statePath)
		}
		result = f(s)
		if result != success {
			cached = nil // f may have changed it before it gave up
			return nil
		}
		cached = nil
		if err := writeState(statePath, s); err != nil {
			return err
		}
		key, err := statKey(statePath)
		if err == nil {
			cached, cachedKey = s, key
		}
		return nil
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "simcluster NVML: %v\n", err)
		return errUnknown
	}
	return result
}

func deviceOf(s *hostState, h C.nvmlDevice_t) (*gpu, ret) {
	k, ok := keyOf(unsafe.Pointer(h.handle), kindDevice)
	if !ok || int(k.gpu) >= len(s.GPUs) {
		return nil, errInvalidArgument
	}
	return &s.GPUs[k.gpu], success
}

func gpuInstanceOf(s *hostState, h C.nvmlGpuInstance_t) (*gpu, *giState, ret) {
	k, ok := keyOf(unsafe.Pointer(h.handle), kindGpuInstance)
	if !ok || int(k.gpu) >= len(s.GPUs) {
		return nil, nil, errInvalidArgument
	}
	g := &s.GPUs[k.gpu]
	gi := g.gpuInstance(k.gi)
	if gi == nil {
		return nil, nil, errInvalidArgument
	}
	return g, gi, success
}

func computeInstanceOf(s *hostState, h C.nvmlComputeInstance_t) (*gpu, *giState, *ciState, ret) {
	k, ok := keyOf(unsafe.Pointer(h.handle), kindComputeInstance)
	if !ok || int(k.gpu) >= len(s.GPUs) {
		return nil, nil, nil, errInvalidArgument
	}
	g := &s.GPUs[k.gpu]
	gi := g.gpuInstance(k.gi)
	if gi == nil {
		return nil, nil, nil, errInvalidArgument
	}
	ci := gi.computeInstance(k.ci)
	if ci == nil {
		return nil, nil, nil, errInvalidArgument
	}
	return g, gi, ci, success
}

func putString(dst *C.char, length C.uint, value string) ret {
	if dst == nil {
		return errInvalidArgument
	}
	if uint(len(value))+1 > uint(length) {
		return errInsufficientSize
	}
	buffer := unsafe.Slice((*byte)(unsafe.Pointer(dst)), int(length))
	copy(buffer, value)
	buffer[len(value)] = 0
	return success
}

func newUUID(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	return fmt.Sprintf("%s-%x-%x-%x-%x-%x", prefix, b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// -- initialisation -------------------------------------------------------------------------------------------------

func initialize() ret {
	mu.Lock()
	defer mu.Unlock()
	if initCount > 0 {
		initCount++
		return success
	}
	path := os.Getenv(stateEnv)
	if path == "" {
		fmt.Fprintf(os.Stderr, "simcluster NVML: %s is not set: no GPU host state to serve\n", stateEnv)
		return errDriverNotLoaded
	}
	if _, err := readState(path); err != nil {
		fmt.Fprintf(os.Stderr, "simcluster NVML: %v\n", err)
		return errDriverNotLoaded
	}
	statePath = path
	initCount = 1
	return success
}

//export nvmlInit_v2
func nvmlInit_v2() ret { return initialize() }

//export nvmlInit
func nvmlInit() ret { return initialize() }

//export nvmlInitWithFlags
func nvmlInitWithFlags(flags C.uint) ret { return initialize() }

//export nvmlShutdown
func nvmlShutdown() ret {
	mu.Lock()
	defer mu.Unlock()
	if initCount == 0 {
		return errUninitialized
	}
	initCount--
	if initCount == 0 {
		cached = nil
	}
	return success
}

// -- system -------------------------------------------------------------------------------------------------------

//export nvmlSystemGetDriverVersion
func nvmlSystemGetDriverVersion(version *C.char, length C.uint) ret {
	mu.Lock()
	defer mu.Unlock()
	s, r := current()
	if r != success {
		return r
	}
	return putString(version, length, s.DriverVersion)
}

//export nvmlSystemGetNVMLVersion
func nvmlSystemGetNVMLVersion(version *C.char, length C.uint) ret {
	mu.Lock()
	defer mu.Unlock()
	s, r := current()
	if r != success {
		return r
	}
	return putString(version, length, s.NvmlVersion)
}

func cudaDriverVersion(version *C.int) ret {
	mu.Lock()
	defer mu.Unlock()
	s, r := current()
	if r != success {
		return r
	}
	if version == nil {
		return errInvalidArgument
	}
	*version = C.int(s.CudaDriverVersion)
	return success
}

//export nvmlSystemGetCudaDriverVersion
func nvmlSystemGetCudaDriverVersion(version *C.int) ret { return cudaDriverVersion(version) }

//export nvmlSystemGetCudaDriverVersion_v2
func nvmlSystemGetCudaDriverVersion_v2(version *C.int) ret { return cudaDriverVersion(version) }

// -- devices ------------------------------------------------------------------------------------------------------

func deviceCount(count *C.uint) ret {
	mu.Lock()
	defer mu.Unlock()
	s, r := current()
	if r != success {
		return r
	}
	if count == nil {
		return errInvalidArgument
	}
	*count = C.uint(len(s.GPUs))
	return success
}

//export nvmlDeviceGetCount_v2
func nvmlDeviceGetCount_v2(count *C.uint) ret { return deviceCount(count) }

//export nvmlDeviceGetCount
func nvmlDeviceGetCount(count *C.uint) ret { return deviceCount(count) }

func handleByIndex(index C.uint, device *C.nvmlDevice_t) ret {
	mu.Lock()
	defer mu.Unlock()
	s, r := current()
	if r != success {
		return r
	}
	if device == nil || int(index) >= len(s.GPUs) {
		return errInvalidArgument
	}
	*device = devHandle(handleFor(handleKey{kind: kindDevice, gpu: uint32(index)}))
	return success
}

//export nvmlDeviceGetHandleByIndex_v2
func nvmlDeviceGetHandleByIndex_v2(index C.uint, device *C.nvmlDevice_t) ret {
	return handleByIndex(index, device)
}

//export nvmlDeviceGetHandleByIndex
func nvmlDeviceGetHandleByIndex(index C.uint, device *C.nvmlDevice_t) ret {
	return handleByIndex(index, device)
}

//export simDeviceGetHandleByUUID
func simDeviceGetHandleByUUID(uuid *C.char, device *C.nvmlDevice_t) ret {
	mu.Lock()
	defer mu.Unlock()
	s, r := current()
	if r != success {
		return r
	}
	if uuid == nil || device == nil {
		return errInvalidArgument
	}
	wanted := C.GoString(uuid)
	for i, g := range s.GPUs {
		if g.UUID == wanted {
			*device = devHandle(handleFor(handleKey{kind: kindDevice, gpu: uint32(i)}))
			return success
		}
		for _, gi := range g.GpuInstances {
			for _, ci := range gi.ComputeInstances {
				if ci.UUID == wanted {
					k := handleKey{kind: kindMigDevice, gpu: uint32(i), gi: gi.ID, ci: ci.ID}
					*device = devHandle(handleFor(k))
					return success
				}
			}
		}
	}
	return errNotFound
}

// busKey reduces a PCI bus id to domain:bus:device.function numbers, so that the
// legacy form (0000:07:00.0) and NVML's (00000000:07:00.0) name the same GPU.
func busKey(id string) (key [4]uint64, ok bool) {
	var domain, bus, dev, fn uint64
	if _, err := fmt.Sscanf(id, "%x:%x:%x.%x", &domain, &bus, &dev, &fn); err != nil {
		return key, false
	}
	return [4]uint64{domain, bus, dev, fn}, true
}

//export simDeviceGetHandleByPciBusId
func simDeviceGetHandleByPciBusId(busID *C.char, device *C.nvmlDevice_t) ret {
	mu.Lock()
	defer mu.Unlock()
	s, r := current()
	if r != success {
		return r
	}
	if busID == nil || device == nil {
		return errInvalidArgument
	}
	wanted, ok := busKey(C.GoString(busID))
	if !ok {
		return errInvalidArgument
	}
	for i, g := range s.GPUs {
		if have, ok := busKey(g.PciBusID); ok && have == wanted {
			*device = devHandle(handleFor(handleKey{kind: kindDevice, gpu: uint32(i)}))
			return success
		}
	}
	return errNotFound
}

// withDevice runs f on the GPU a device handle names, with the state read now.
func withDevice(h C.nvmlDevice_t, f func(s *hostState, g *gpu) ret) ret {
	mu.Lock()
	defer mu.Unlock()
	s, r := current()
	if r != success {
		return r
	}
	g, r := deviceOf(s, h)
	if r != success {
		return r
	}
	return f(s, g)
}

//export nvmlDeviceGetIndex
func nvmlDeviceGetIndex(device C.nvmlDevice_t, index *C.uint) ret {
	return withDevice(device, func(s *hostState, g *gpu) ret {
		*index = C.uint(g.Index)
		return success
	})
}

//export nvmlDeviceGetMinorNumber
func nvmlDeviceGetMinorNumber(device C.nvmlDevice_t, minor *C.uint) ret {
	return withDevice(device, func(s *hostState, g *gpu) ret {
		*minor = C.uint(g.Index)
		return success
	})
}

//export nvmlDeviceGetUUID
func nvmlDeviceGetUUID(device C.nvmlDevice_t, uuid *C.char, length C.uint) ret {
	mu.Lock()
	defer mu.Unlock()
	s, r := current()
	if r != success {
		return r
	}
	if k, ok := keyOf(unsafe.Pointer(device.handle), kindMigDevice); ok {
		_, ci := migDevice(s, k)
		if ci == nil {
			return errInvalidArgument
		}
		return putString(uuid, length, ci.UUID)
	}
	g, r := deviceOf(s, device)
	if r != success {
		return r
	}
	return putString(uuid, length, g.UUID)
}

//export nvmlDeviceGetName
func nvmlDeviceGetName(device C.nvmlDevice_t, name *C.char, length C.uint) ret {
	return withDevice(device, func(s *hostState, g *gpu) ret {
		return putString(name, length, s.Model.Product)
	})
}

func pciInfo(device C.nvmlDevice_t, pci *C.nvmlPciInfo_t) ret {
	return withDevice(device, func(s *hostState, g *gpu) ret {
		key, ok := busKey(g.PciBusID)
		if !ok || pci == nil {
			return errInvalidArgument
		}
		*pci = C.nvmlPciInfo_t{}
		legacy := fmt.Sprintf("%04x:%02x:%02x.%x", key[0], key[1], key[2], key[3])
		if r := putString(&pci.busIdLegacy[0], C.uint(len(pci.busIdLegacy)), legacy); r != success {
			return r
		}
		if r := putString(&pci.busId[0], C.uint(len(pci.busId)), g.PciBusID); r != success {
			return r
		}
		pci.domain = C.uint(key[0])
		pci.bus = C.uint(key[1])
		pci.device = C.uint(key[2])
		pci.pciDeviceId = C.uint(s.Model.PciDeviceID)
		pci.pciSubSystemId = C.uint(s.Model.PciSubsystemID)
		return success
	})
}

//export nvmlDeviceGetPciInfo_v3
func nvmlDeviceGetPciInfo_v3(device C.nvmlDevice_t, pci *C.nvmlPciInfo_t) ret {
	return pciInfo(device, pci)
}

//export nvmlDeviceGetPciInfo_v2
func nvmlDeviceGetPciInfo_v2(device C.nvmlDevice_t, pci *C.nvmlPciInfo_t) ret {
	return pciInfo(device, pci)
}

//export nvmlDeviceGetPciInfo
func nvmlDeviceGetPciInfo(device C.nvmlDevice_t, pci *C.nvmlPciInfo_t) ret {
	return pciInfo(device, pci)
}

//export nvmlDeviceGetMemoryInfo
func nvmlDeviceGetMemoryInfo(device C.nvmlDevice_t, memory *C.nvmlMemory_t) ret {
	return withDevice(device, func(s *hostState, g *gpu) ret {
		total := s.Model.MemoryMiB * 1024 * 1024
		*memory = C.nvmlMemory_t{total: C.ulonglong(total), free: C.ulonglong(total), used: 0}
		return success
	})
}

//export nvmlDeviceGetCudaComputeCapability
func nvmlDeviceGetCudaComputeCapability(device C.nvmlDevice_t, major *C.int, minor *C.int) ret {
	return withDevice(device, func(s *hostState, g *gpu) ret {
		*major = C.int(s.Model.ComputeCapability[0])
		*minor = C.int(s.Model.ComputeCapability[1])
		return success
	})
}

//export nvmlDeviceGetArchitecture
func nvmlDeviceGetArchitecture(device C.nvmlDevice_t, arch *C.nvmlDeviceArchitecture_t) ret {
	return withDevice(device, func(s *hostState, g *gpu) ret {
		*arch = C.nvmlDeviceArchitecture_t(s.Model.Architecture)
		return success
	})
}

// -- MIG mode -----------------------------------------------------------------------------------------------------

//export nvmlDeviceGetMigMode
func nvmlDeviceGetMigMode(device C.nvmlDevice_t, currentMode *C.uint, pendingMode *C.uint) ret {
	return withDevice(device, func(s *hostState, g *gpu) ret {
		if !s.Model.MigCapable {
			return errNotSupported
		}
		*currentMode = C.uint(g.Mig.Current)
		*pendingMode = C.uint(g.Mig.Pending)
		return success
	})
}

// nvmlDeviceSetMigMode: on A100 and A30 the new mode waits for a GPU reset or a
// reboot (activation status NVML_ERROR_RESET_REQUIRED); from H100 on it takes
// effect at once, unless a process holds the GPU. MIG cannot be turned off while
// GPU instances exist.
//
//export nvmlDeviceSetMigMode
func nvmlDeviceSetMigMode(device C.nvmlDevice_t, mode C.uint, activationStatus *C.nvmlReturn_t) ret {
	mu.Lock()
	defer mu.Unlock()
	if mode != migDisable && mode != migEnable {
		return errInvalidArgument
	}
	return mutate(func(s *hostState) ret {
		g, r := deviceOf(s, device)
		if r != success {
			return r
		}
		if !s.Model.MigCapable {
			return errNotSupported
		}
		if mode == migDisable && len(g.GpuInstances) > 0 {
			return errInUse
		}
		status := success
		switch {
		case s.Model.ModeChange == "immediate" && len(g.Clients) > 0 && uint32(mode) != g.Mig.Current:
			return errInUse
		case s.Model.ModeChange == "immediate":
			g.Mig.Current = uint32(mode)
			g.Mig.Pending = uint32(mode)
		default:
			g.Mig.Pending = uint32(mode)
			if g.Mig.Pending != g.Mig.Current {
				status = errResetRequired
			}
		}
		if activationStatus != nil {
			*activationStatus = status
		}
		return success
	})
}

// -- GPU instances ------------------------------------------------------------------------------------------------

func fillGpuInstanceProfileInfo(p *gpuInstanceProfile, info *C.nvmlGpuInstanceProfileInfo_t) {
	p2p := C.uint(0)
	if p.P2P {
		p2p = 1
	}
	*info = C.nvmlGpuInstanceProfileInfo_t{
		id:                  C.uint(p.ID),
		isP2pSupported:      p2p,
		sliceCount:          C.uint(p.SliceCount),
		instanceCount:       C.uint(p.InstanceCount),
		multiprocessorCount: C.uint(p.MultiprocessorCount),
		copyEngineCount:     C.uint(p.CopyEngines),
		decoderCount:        C.uint(p.Decoders),
		encoderCount:        C.uint(p.Encoders),
		jpegCount:           C.uint(p.JPEGs),
		ofaCount:            C.uint(p.OFAs),
		memorySizeMB:        C.ulonglong(p.MemoryMiB),
	}
}

//export nvmlDeviceGetGpuInstanceProfileInfo
func nvmlDeviceGetGpuInstanceProfileInfo(device C.nvmlDevice_t, profile C.uint, info *C.nvmlGpuInstanceProfileInfo_t) ret {
	return withDevice(device, func(s *hostState, g *gpu) ret {
		if profile >= gpuInstanceProfileCount || info == nil {
			return errInvalidArgument
		}
		if !s.Model.MigCapable {
			return errNotSupported
		}
		p := s.Model.profile(uint32(profile))
		if p == nil {
			return errNotSupported
		}
		fillGpuInstanceProfileInfo(p, info)
		return success
	})
}

//export nvmlDeviceGetGpuInstancePossiblePlacements_v2
func nvmlDeviceGetGpuInstancePossiblePlacements_v2(device C.nvmlDevice_t, profile C.uint, placements *C.nvmlGpuInstancePlacement_t, count *C.uint) ret {
	return withDevice(device, func(s *hostState, g *gpu) ret {
		if count == nil {
			return errInvalidArgument
		}
		if !s.Model.MigCapable || g.Mig.Current != migEnable {
			return errNotSupported
		}
		p := s.Model.profile(uint32(profile))
		if p == nil {
			return errNotSupported
		}
		if placements == nil {
			*count = C.uint(len(p.Placements))
			return success
		}
		if int(*count) < len(p.Placements) {
			*count = C.uint(len(p.Placements))
			return errInsufficientSize
		}
		out := unsafe.Slice(placements, len(p.Placements))
		for i, pl := range p.Placements {
			out[i] = C.nvmlGpuInstancePlacement_t{start: C.uint(pl.Start), size: C.uint(pl.Size)}
		}
		*count = C.uint(len(p.Placements))
		return success
	})
}

// freePlacements lists the placements of profile p that no GPU instance of g overlaps.
func freePlacements(g *gpu, p *gpuInstanceProfile) []placement {
	var free []placement
	for _, pl := range p.Placements {
		taken := false
		for _, gi := range g.GpuInstances {
			if overlaps(pl.Start, pl.Size, gi.Start, gi.Size) {
				taken = true
				break
			}
		}
		if !taken {
			free = append(free, pl)
		}
	}
	return free
}

// exclusiveFits tells whether instances of these profiles, with one more of p, hold no more compute slices,
// JPEG and OFA engines than the whole-GPU profile: what a GPU has to share out exclusively. (Not decoders
// or copy engines: NVIDIA's recorded A100-80GB table gives each of seven 1g.10gb instances a decoder.)
func exclusiveFits(m *model, instances []giState, p *gpuInstanceProfile) bool {
	var whole *gpuInstanceProfile
	for i := range m.GpuInstanceProfile {
		if whole == nil || m.GpuInstanceProfile[i].SliceCount > whole.SliceCount {
			whole = &m.GpuInstanceProfile[i]
		}
	}
	slices, jpegs, ofas := p.SliceCount, p.JPEGs, p.OFAs
	for _, gi := range instances {
		if q := m.profile(gi.ProfileID); q != nil {
			slices, jpegs, ofas = slices+q.SliceCount, jpegs+q.JPEGs, ofas+q.OFAs
		}
	}
	return slices <= whole.SliceCount && jpegs <= whole.JPEGs && ofas <= whole.OFAs
}

func instancesOf(g *gpu, profile uint32) int {
	n := 0
	for _, gi := range g.GpuInstances {
		if gi.ProfileID == profile {
			n++
		}
	}
	return n
}

//export nvmlDeviceGetGpuInstanceRemainingCapacity
func nvmlDeviceGetGpuInstanceRemainingCapacity(device C.nvmlDevice_t, profile C.uint, count *C.uint) ret {
	return withDevice(device, func(s *hostState, g *gpu) ret {
		if !s.Model.MigCapable || g.Mig.Current != migEnable {
			return errNotSupported
		}
		p := s.Model.profile(uint32(profile))
		if p == nil || count == nil {
			return errInvalidArgument
		}
		// Count greedily: placements that fit one after another, within the profile's instance count.
		trial := gpu{GpuInstances: append([]giState(nil), g.GpuInstances...)}
		n := 0
		for instancesOf(&trial, p.ID) < int(p.InstanceCount) && exclusiveFits(&s.Model, trial.GpuInstances, p) {
			free := freePlacements(&trial, p)
			if len(free) == 0 {
				break
			}
			trial.GpuInstances = append(trial.GpuInstances, giState{ProfileID: p.ID, Start: free[0].Start, Size: free[0].Size})
			n++
		}
		*count = C.uint(n)
		return success
	})
}

func nextGpuInstanceID(g *gpu) uint32 {
	id := uint32(1)
	for g.gpuInstance(id) != nil {
		id++
	}
	return id
}

// createGpuInstance creates a GPU instance of profile at the placement given, or at the
// first free one of the profile's placements in the order NVML lists them. Refused
// (NVML_ERROR_INSUFFICIENT_RESOURCES) beyond the profile's instance count, without a
// free placement, or beyond the GPU's exclusive resources (exclusiveFits).
func createGpuInstance(device C.nvmlDevice_t, profile C.uint, at *placement, out *C.nvmlGpuInstance_t) ret {
	mu.Lock()
	defer mu.Unlock()
	if out == nil {
		return errInvalidArgument
	}
	var created handleKey
	r := mutate(func(s *hostState) ret {
		g, r := deviceOf(s, device)
		if r != success {
			return r
		}
		if !s.Model.MigCapable || g.Mig.Current != migEnable {
			return errNotSupported
		}
		if s.Faults.CreateFails {
			return errUnknown
		}
		p := s.Model.profile(uint32(profile))
		if p == nil {
			return errInvalidArgument
		}
		if instancesOf(g, p.ID) >= int(p.InstanceCount) || !exclusiveFits(&s.Model, g.GpuInstances, p) {
			return errInsufficientRes
		}
		free := freePlacements(g, p)
		var chosen *placement
		if at == nil {
			if len(free) > 0 {
				chosen = &free[0]
			}
		} else {
			known := false
			for _, pl := range p.Placements {
				if pl == *at {
					known = true
				}
			}
			if !known {
				return errInvalidArgument
			}
			for i := range free {
				if free[i] == *at {
					chosen = &free[i]
				}
			}
		}
		if chosen == nil {
			return errInsufficientRes
		}
		gi := giState{ID: nextGpuInstanceID(g), ProfileID: p.ID, Start: chosen.Start, Size: chosen.Size,
			ComputeInstances: []ciState{}}
		g.GpuInstances = append(g.GpuInstances, gi)
		created = handleKey{kind: kindGpuInstance, gpu: g.Index, gi: gi.ID}
		return success
	})
	if r == success {
		*out = giHandle(handleFor(created))
	}
	return r
}

//export nvmlDeviceCreateGpuInstance
func nvmlDeviceCreateGpuInstance(device C.nvmlDevice_t, profile C.uint, gpuInstance *C.nvmlGpuInstance_t) ret {
	return createGpuInstance(device, profile, nil, gpuInstance)
}

//export simDeviceCreateGpuInstanceWithPlacement
func simDeviceCreateGpuInstanceWithPlacement(device C.nvmlDevice_t, profile C.uint, at *C.nvmlGpuInstancePlacement_t, gpuInstance *C.nvmlGpuInstance_t) ret {
	if at == nil {
		return errInvalidArgument
	}
	return createGpuInstance(device, profile, &placement{Start: uint32(at.start), Size: uint32(at.size)}, gpuInstance)
}

//export nvmlDeviceGetGpuInstances
func nvmlDeviceGetGpuInstances(device C.nvmlDevice_t, profile C.uint, gpuInstances *C.nvmlGpuInstance_t, count *C.uint) ret {
	return withDevice(device, func(s *hostState, g *gpu) ret {
		if count == nil {
			return errInvalidArgument
		}
		if !s.Model.MigCapable || g.Mig.Current != migEnable {
			return errNotSupported
		}
		if s.Model.profile(uint32(profile)) == nil {
			return errInvalidArgument
		}
		var found []handleKey
		for _, gi := range g.GpuInstances {
			if gi.ProfileID == uint32(profile) {
				found = append(found, handleKey{kind: kindGpuInstance, gpu: g.Index, gi: gi.ID})
			}
		}
		if int(*count) < len(found) {
			*count = C.uint(len(found))
			return errInsufficientSize
		}
		if len(found) > 0 {
			if gpuInstances == nil {
				return errInvalidArgument
			}
			out := unsafe.Slice(gpuInstances, len(found))
			for i, k := range found {
				out[i] = giHandle(handleFor(k))
			}
		}
		*count = C.uint(len(found))
		return success
	})
}

//export nvmlDeviceGetGpuInstanceById
func nvmlDeviceGetGpuInstanceById(device C.nvmlDevice_t, id C.uint, gpuInstance *C.nvmlGpuInstance_t) ret {
	return withDevice(device, func(s *hostState, g *gpu) ret {
		if !s.Model.MigCapable || g.Mig.Current != migEnable {
			return errNotSupported
		}
		if gpuInstance == nil {
			return errInvalidArgument
		}
		if g.gpuInstance(uint32(id)) == nil {
			return errNotFound
		}
		*gpuInstance = giHandle(handleFor(handleKey{kind: kindGpuInstance, gpu: g.Index, gi: uint32(id)}))
		return success
	})
}

//export nvmlGpuInstanceGetInfo
func nvmlGpuInstanceGetInfo(gpuInstance C.nvmlGpuInstance_t, info *C.nvmlGpuInstanceInfo_t) ret {
	mu.Lock()
	defer mu.Unlock()
	s, r := current()
	if r != success {
		return r
	}
	g, gi, r := gpuInstanceOf(s, gpuInstance)
	if r != success {
		return r
	}
	if info == nil {
		return errInvalidArgument
	}
	*info = C.nvmlGpuInstanceInfo_t{
		device:    devHandle(handleFor(handleKey{kind: kindDevice, gpu: g.Index})),
		id:        C.uint(gi.ID),
		profileId: C.uint(gi.ProfileID),
		placement: C.nvmlGpuInstancePlacement_t{start: C.uint(gi.Start), size: C.uint(gi.Size)},
	}
	return success
}

//export nvmlGpuInstanceDestroy
func nvmlGpuInstanceDestroy(gpuInstance C.nvmlGpuInstance_t) ret {
	mu.Lock()
	defer mu.Unlock()
	k, ok := keyOf(unsafe.Pointer(gpuInstance.handle), kindGpuInstance)
	if !ok {
		return errInvalidArgument
	}
	return mutate(func(s *hostState) ret {
		g, gi, r := gpuInstanceOf(s, gpuInstance)
		if r != success {
			return r
		}
		if len(gi.ComputeInstances) > 0 {
			return errInUse
		}
		kept := g.GpuInstances[:0]
		for _, other := range g.GpuInstances {
			if other.ID != k.gi {
				kept = append(kept, other)
			}
		}
		g.GpuInstances = kept
		return success
	})
}

// -- compute instances --------------------------------------------------------------------------------------------

//export nvmlGpuInstanceGetComputeInstanceProfileInfo
func nvmlGpuInstanceGetComputeInstanceProfileInfo(gpuInstance C.nvmlGpuInstance_t, profile C.uint, engProfile C.uint, info *C.nvmlComputeInstanceProfileInfo_t) ret {
	mu.Lock()
	defer mu.Unlock()
	s, r := current()
	if r != success {
		return r
	}
	_, gi, r := gpuInstanceOf(s, gpuInstance)
	if r != success {
		return r
	}
	if profile >= computeProfileCount || engProfile >= computeEngineProfileCount || info == nil {
		return errInvalidArgument
	}
	if engProfile != computeEngineShared {
		return errNotSupported
	}
	cp := s.Model.profile(gi.ProfileID).computeProfile(uint32(profile))
	if cp == nil {
		return errNotSupported
	}
	*info = C.nvmlComputeInstanceProfileInfo_t{
		id:                  C.uint(cp.ID),
		sliceCount:          C.uint(cp.SliceCount),
		instanceCount:       C.uint(cp.InstanceCount),
		multiprocessorCount: C.uint(cp.MultiprocessorCount),
	}
	return success
}

// freeComputeRange is the first range of size slices, aligned to its size, that no
// compute instance of gi overlaps, inside the GPU instance's compute slices.
func freeComputeRange(gi *giState, sliceCount, size uint32) (uint32, bool) {
	for start := uint32(0); start+size <= sliceCount; start += size {
		taken := false
		for _, ci := range gi.ComputeInstances {
			if overlaps(start, size, ci.Start, ci.Size) {
				taken = true
				break
			}
		}
		if !taken {
			return start, true
		}
	}
	return 0, false
}

//export nvmlGpuInstanceGetComputeInstanceRemainingCapacity
func nvmlGpuInstanceGetComputeInstanceRemainingCapacity(gpuInstance C.nvmlGpuInstance_t, profile C.uint, count *C.uint) ret {
	mu.Lock()
	defer mu.Unlock()
	s, r := current()
	if r != success {
		return r
	}
	_, gi, r := gpuInstanceOf(s, gpuInstance)
	if r != success {
		return r
	}
	gp := s.Model.profile(gi.ProfileID)
	cp := gp.computeProfile(uint32(profile))
	if cp == nil || count == nil {
		return errInvalidArgument
	}
	trial := giState{ComputeInstances: append([]ciState(nil), gi.ComputeInstances...)}
	n := 0
	for {
		same := 0
		for _, ci := range trial.ComputeInstances {
			if ci.ProfileID == cp.ID {
				same++
			}
		}
		start, ok := freeComputeRange(&trial, gp.SliceCount, cp.SliceCount)
		if !ok || same >= int(cp.InstanceCount) {
			break
		}
		trial.ComputeInstances = append(trial.ComputeInstances, ciState{ProfileID: cp.ID, Start: start, Size: cp.SliceCount})
		n++
	}
	*count = C.uint(n)
	return success
}

//export nvmlGpuInstanceCreateComputeInstance
func nvmlGpuInstanceCreateComputeInstance(gpuInstance C.nvmlGpuInstance_t, profile C.uint, instance *C.nvmlComputeInstance_t) ret {
	mu.Lock()
	defer mu.Unlock()
	if instance == nil {
		return errInvalidArgument
	}
	var created handleKey
	r := mutate(func(s *hostState) ret {
		g, gi, r := gpuInstanceOf(s, gpuInstance)
		if r != success {
			return r
		}
		gp := s.Model.profile(gi.ProfileID)
		cp := gp.computeProfile(uint32(profile))
		if cp == nil {
			return errInvalidArgument
		}
		same := 0
		for _, ci := range gi.ComputeInstances {
			if ci.ProfileID == cp.ID {
				same++
			}
		}
		if same >= int(cp.InstanceCount) {
			return errInsufficientRes
		}
		start, ok := freeComputeRange(gi, gp.SliceCount, cp.SliceCount)
		if !ok {
			return errInsufficientRes
		}
		id := uint32(0)
		for gi.computeInstance(id) != nil {
			id++
		}
		gi.ComputeInstances = append(gi.ComputeInstances, ciState{
			ID: id, ProfileID: cp.ID, Start: start, Size: cp.SliceCount, UUID: newUUID("MIG"),
		})
		created = handleKey{kind: kindComputeInstance, gpu: g.Index, gi: gi.ID, ci: id}
		return success
	})
	if r == success {
		*instance = ciHandle(handleFor(created))
	}
	return r
}

//export nvmlGpuInstanceGetComputeInstances
func nvmlGpuInstanceGetComputeInstances(gpuInstance C.nvmlGpuInstance_t, profile C.uint, computeInstances *C.nvmlComputeInstance_t, count *C.uint) ret {
	mu.Lock()
	defer mu.Unlock()
	s, r := current()
	if r != success {
		return r
	}
	g, gi, r := gpuInstanceOf(s, gpuInstance)
	if r != success {
		return r
	}
	if count == nil || s.Model.profile(gi.ProfileID).computeProfile(uint32(profile)) == nil {
		return errInvalidArgument
	}
	var found []handleKey
	for _, ci := range gi.ComputeInstances {
		if ci.ProfileID == uint32(profile) {
			found = append(found, handleKey{kind: kindComputeInstance, gpu: g.Index, gi: gi.ID, ci: ci.ID})
		}
	}
	if int(*count) < len(found) {
		*count = C.uint(len(found))
		return errInsufficientSize
	}
	if len(found) > 0 {
		if computeInstances == nil {
			return errInvalidArgument
		}
		out := unsafe.Slice(computeInstances, len(found))
		for i, k := range found {
			out[i] = ciHandle(handleFor(k))
		}
	}
	*count = C.uint(len(found))
	return success
}

//export nvmlGpuInstanceGetComputeInstanceById
func nvmlGpuInstanceGetComputeInstanceById(gpuInstance C.nvmlGpuInstance_t, id C.uint, instance *C.nvmlComputeInstance_t) ret {
	mu.Lock()
	defer mu.Unlock()
	s, r := current()
	if r != success {
		return r
	}
	g, gi, r := gpuInstanceOf(s, gpuInstance)
	if r != success {
		return r
	}
	if instance == nil {
		return errInvalidArgument
	}
	if gi.computeInstance(uint32(id)) == nil {
		return errNotFound
	}
	*instance = ciHandle(handleFor(handleKey{kind: kindComputeInstance, gpu: g.Index, gi: gi.ID, ci: uint32(id)}))
	return success
}

//export nvmlComputeInstanceGetInfo_v2
func nvmlComputeInstanceGetInfo_v2(instance C.nvmlComputeInstance_t, info *C.nvmlComputeInstanceInfo_t) ret {
	mu.Lock()
	defer mu.Unlock()
	s, r := current()
	if r != success {
		return r
	}
	g, gi, ci, r := computeInstanceOf(s, instance)
	if r != success {
		return r
	}
	if info == nil {
		return errInvalidArgument
	}
	*info = C.nvmlComputeInstanceInfo_t{
		device:      devHandle(handleFor(handleKey{kind: kindDevice, gpu: g.Index})),
		gpuInstance: giHandle(handleFor(handleKey{kind: kindGpuInstance, gpu: g.Index, gi: gi.ID})),
		id:          C.uint(ci.ID),
		profileId:   C.uint(ci.ProfileID),
		placement:   C.nvmlComputeInstancePlacement_t{start: C.uint(ci.Start), size: C.uint(ci.Size)},
	}
	return success
}

//export nvmlComputeInstanceDestroy
func nvmlComputeInstanceDestroy(instance C.nvmlComputeInstance_t) ret {
	mu.Lock()
	defer mu.Unlock()
	k, ok := keyOf(unsafe.Pointer(instance.handle), kindComputeInstance)
	if !ok {
		return errInvalidArgument
	}
	return mutate(func(s *hostState) ret {
		_, gi, _, r := computeInstanceOf(s, instance)
		if r != success {
			return r
		}
		kept := gi.ComputeInstances[:0]
		for _, other := range gi.ComputeInstances {
			if other.ID != k.ci {
				kept = append(kept, other)
			}
		}
		gi.ComputeInstances = kept
		return success
	})
}

// -- MIG devices (a compute instance seen as a device, as go-nvlib walks them) --------------------------------------

// migDevice is the GPU instance and compute instance a MIG device handle names (nil, nil when either is gone).
func migDevice(s *hostState, k handleKey) (*giState, *ciState) {
	if int(k.gpu) >= len(s.GPUs) {
		return nil, nil
	}
	gi := s.GPUs[k.gpu].gpuInstance(k.gi)
	if gi == nil {
		return nil, nil
	}
	ci := gi.computeInstance(k.ci)
	if ci == nil {
		return nil, nil
	}
	return gi, ci
}

//export nvmlDeviceIsMigDeviceHandle
func nvmlDeviceIsMigDeviceHandle(device C.nvmlDevice_t, isMigDevice *C.uint) ret {
	mu.Lock()
	defer mu.Unlock()
	k, ok := keyOf(unsafe.Pointer(device.handle), kindDevice, kindMigDevice)
	if !ok || isMigDevice == nil {
		return errInvalidArgument
	}
	*isMigDevice = 0
	if k.kind == kindMigDevice {
		*isMigDevice = 1
	}
	return success
}

//export nvmlDeviceGetMaxMigDeviceCount
func nvmlDeviceGetMaxMigDeviceCount(device C.nvmlDevice_t, count *C.uint) ret {
	return withDevice(device, func(s *hostState, g *gpu) ret {
		if !s.Model.MigCapable {
			return errNotSupported
		}
		most := uint32(0)
		if g.Mig.Current != migEnable {
			// nvml.h: "Returns zero if MIG is not supported or enabled." (go-nvlib then walks no MIG device).
			*count = 0
			return success
		}
		for _, p := range s.Model.GpuInstanceProfile {
			for _, cp := range p.ComputeProfiles {
				if n := p.InstanceCount * cp.InstanceCount; n > most {
					most = n
				}
			}
		}
		*count = C.uint(most)
		return success
	})
}

// migDevices lists the GPU's compute instances in the order of their GPU and compute instance ids.
func migDevices(g *gpu) []handleKey {
	var found []handleKey
	for _, gi := range g.GpuInstances {
		for _, ci := range gi.ComputeInstances {
			found = append(found, handleKey{kind: kindMigDevice, gpu: g.Index, gi: gi.ID, ci: ci.ID})
		}
	}
	for i := 1; i < len(found); i++ {
		for j := i; j > 0 && (found[j].gi < found[j-1].gi || (found[j].gi == found[j-1].gi && found[j].ci < found[j-1].ci)); j-- {
			found[j], found[j-1] = found[j-1], found[j]
		}
	}
	return found
}

//export nvmlDeviceGetMigDeviceHandleByIndex
func nvmlDeviceGetMigDeviceHandleByIndex(device C.nvmlDevice_t, index C.uint, migDeviceOut *C.nvmlDevice_t) ret {
	return withDevice(device, func(s *hostState, g *gpu) ret {
		if !s.Model.MigCapable || g.Mig.Current != migEnable {
			return errNotSupported
		}
		found := migDevices(g)
		if int(index) >= len(found) {
			return errNotFound
		}
		*migDeviceOut = devHandle(handleFor(found[index]))
		return success
	})
}

//export nvmlDeviceGetDeviceHandleFromMigDeviceHandle
func nvmlDeviceGetDeviceHandleFromMigDeviceHandle(migDeviceIn C.nvmlDevice_t, device *C.nvmlDevice_t) ret {
	mu.Lock()
	defer mu.Unlock()
	k, ok := keyOf(unsafe.Pointer(migDeviceIn.handle), kindMigDevice)
	if !ok || device == nil {
		return errInvalidArgument
	}
	*device = devHandle(handleFor(handleKey{kind: kindDevice, gpu: k.gpu}))
	return success
}

//export nvmlDeviceGetGpuInstanceId
func nvmlDeviceGetGpuInstanceId(device C.nvmlDevice_t, id *C.uint) ret {
	mu.Lock()
	defer mu.Unlock()
	k, ok := keyOf(unsafe.Pointer(device.handle), kindMigDevice)
	if !ok || id == nil {
		return errInvalidArgument
	}
	*id = C.uint(k.gi)
	return success
}

//export nvmlDeviceGetComputeInstanceId
func nvmlDeviceGetComputeInstanceId(device C.nvmlDevice_t, id *C.uint) ret {
	mu.Lock()
	defer mu.Unlock()
	k, ok := keyOf(unsafe.Pointer(device.handle), kindMigDevice)
	if !ok || id == nil {
		return errInvalidArgument
	}
	*id = C.uint(k.ci)
	return success
}

// deviceAttributes answers for a MIG device what NVML reports of it (what GFD labels a MIG device with): its
// compute instance's multiprocessors and slices, its GPU instance's slices, memory and engines (the compute
// instance shares them). A whole GPU answers NVML_ERROR_NOT_SUPPORTED here: nothing this library serves asks.
func deviceAttributes(device C.nvmlDevice_t, attributes *C.nvmlDeviceAttributes_t) ret {
	mu.Lock()
	defer mu.Unlock()
	s, r := current()
	if r != success {
		return r
	}
	k, ok := keyOf(unsafe.Pointer(device.handle), kindDevice, kindMigDevice)
	if !ok || attributes == nil {
		return errInvalidArgument
	}
	if k.kind != kindMigDevice {
		return errNotSupported
	}
	gi, ci := migDevice(s, k)
	if ci == nil {
		return errNotFound
	}
	gp := s.Model.profile(gi.ProfileID)
	if gp == nil {
		return errUnknown
	}
	cp := gp.computeProfile(ci.ProfileID)
	if cp == nil {
		return errUnknown
	}
	*attributes = C.nvmlDeviceAttributes_t{
		multiprocessorCount:       C.uint(cp.MultiprocessorCount),
		sharedCopyEngineCount:     C.uint(gp.CopyEngines),
		sharedDecoderCount:        C.uint(gp.Decoders),
		sharedEncoderCount:        C.uint(gp.Encoders),
		sharedJpegCount:           C.uint(gp.JPEGs),
		sharedOfaCount:            C.uint(gp.OFAs),
		gpuInstanceSliceCount:     C.uint(gp.SliceCount),
		computeInstanceSliceCount: C.uint(cp.SliceCount),
		memorySizeMB:              C.ulonglong(gp.MemoryMiB),
	}
	return success
}

//export nvmlDeviceGetAttributes_v2
func nvmlDeviceGetAttributes_v2(device C.nvmlDevice_t, attributes *C.nvmlDeviceAttributes_t) ret {
	return deviceAttributes(device, attributes)
}

//export nvmlDeviceGetAttributes
func nvmlDeviceGetAttributes(device C.nvmlDevice_t, attributes *C.nvmlDeviceAttributes_t) ret {
	return deviceAttributes(device, attributes)
}
