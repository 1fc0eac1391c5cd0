// Command device-plugin-probe answers, for the GPUs the NVML library in reach
// reports, what NVIDIA's k8s-device-plugin would make of them. It is compiled
// inside a copy of the device plugin's own module (simcluster.upstream builds
// it there; the leading "_" of this directory keeps the go tool of
// simcluster's own modules away from it), because what it calls is internal to
// that module. It decides nothing itself:
//
//	device-plugin-probe resources --mig-strategy S
//	    The device plugin's start: its config from the same flags and defaults,
//	    rm.AddDefaultResourcesToConfig, then rm.NewNVMLResourceManagers (the
//	    device map, with the MIG strategy's checks). Prints
//	    {"resources": {"nvidia.com/<name>": count, ...}} or {"error": "..."}
//	    with the message the plugin exits with.
//	device-plugin-probe devices
//	    What GPU feature discovery reads to label a node, through the same
//	    resource.Manager over NVML: driver and CUDA driver versions, and per GPU
//	    its name, memory, compute capability, MIG capability and mode, PCI class
//	    and MIG devices (name and NVML attributes).
//
// Exit status 0 with an answer; 1 when the probe itself could not run.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/NVIDIA/go-nvlib/pkg/nvlib/device"
	nvinfo "github.com/NVIDIA/go-nvlib/pkg/nvlib/info"
	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/urfave/cli/v2"

	spec "github.com/NVIDIA/k8s-device-plugin/api/config/v1"
	"github.com/NVIDIA/k8s-device-plugin/internal/logger"
	"github.com/NVIDIA/k8s-device-plugin/internal/resource"
	"github.com/NVIDIA/k8s-device-plugin/internal/rm"
)

func main() {
	// The device plugin's own flag names and defaults (cmd/nvidia-device-plugin), the ones its
	// config reads when it builds its resource managers.
	pluginFlags := []cli.Flag{
		&cli.StringFlag{Name: "mig-strategy", Value: spec.MigStrategyNone},
		&cli.BoolFlag{Name: "fail-on-init-error", Value: true},
		&cli.StringFlag{Name: "device-list-strategy", Value: spec.DeviceListStrategyEnvVar},
		&cli.StringFlag{Name: "device-id-strategy", Value: spec.DeviceIDStrategyUUID},
		&cli.StringFlag{Name: "device-discovery-strategy", Value: "auto"},
	}
	app := &cli.App{
		Name:  "device-plugin-probe",
		Usage: "what NVIDIA's k8s-device-plugin makes of the GPUs NVML reports",
		Commands: []*cli.Command{
			{Name: "resources", Flags: pluginFlags, Action: func(c *cli.Context) error {
				return answer(resources(c, pluginFlags))
			}},
			{Name: "devices", Action: func(c *cli.Context) error { return answer(devices()) }},
		},
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "device-plugin-probe: %v\n", err)
		os.Exit(1)
	}
}

func answer(value any, err error) error {
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(value)
}

type resourcesAnswer struct {
	Resources map[string]int `json:"resources"`
	Error     string         `json:"error,omitempty"`
}

func resources(c *cli.Context, flags []cli.Flag) (any, error) {
	config, err := spec.NewConfig(c, flags)
	if err != nil {
		return nil, fmt.Errorf("unable to load config: %v", err)
	}
	spec.DisableResourceNamingInConfig(logger.ToKlog, config)
	switch *config.Flags.MigStrategy {
	case spec.MigStrategyNone, spec.MigStrategySingle, spec.MigStrategyMixed:
	default:
		// The plugin's flag validation, before it touches NVML.
		return resourcesAnswer{Error: fmt.Sprintf("unable to validate flags: unknown MIG strategy: %v",
			*config.Flags.MigStrategy)}, nil
	}
	nvmllib := nvml.New()
	devicelib := device.New(nvmllib)
	infolib := nvinfo.New(nvinfo.WithNvmlLib(nvmllib), nvinfo.WithDeviceLib(devicelib))
	if err := rm.AddDefaultResourcesToConfig(infolib, nvmllib, devicelib, config); err != nil {
		return resourcesAnswer{Error: fmt.Sprintf("unable to add default resources to config: %v", err)}, nil
	}
	// The plugin factory's NVML path (internal/plugin): Init, the resource managers, Shutdown.
	if ret := nvmllib.Init(); ret != nvml.SUCCESS {
		return resourcesAnswer{Error: fmt.Sprintf("error getting plugins: failed to construct resource managers: "+
			"nvml init failed: %v", ret)}, nil
	}
	defer nvmllib.Shutdown()
	managers, err := rm.NewNVMLResourceManagers(infolib, nvmllib, devicelib, config)
	if err != nil {
		return resourcesAnswer{Error: fmt.Sprintf("error getting plugins: failed to construct resource managers: %v",
			err)}, nil
	}
	found := resourcesAnswer{Resources: map[string]int{}}
	for _, manager := range managers {
		found.Resources[string(manager.Resource())] = len(manager.Devices())
	}
	return found, nil
}

type migDevice struct {
	Name       string         `json:"name"`
	Attributes map[string]any `json:"attributes"`
}

type gpuDevice struct {
	Name              string      `json:"name"`
	MemoryMiB         uint64      `json:"memory_mib"`
	ComputeCapability [2]int      `json:"compute_capability"`
	MigCapable        bool        `json:"mig_capable"`
	MigEnabled        bool        `json:"mig_enabled"`
	PCIClass          uint32      `json:"pci_class"`
	MigDevices        []migDevice `json:"mig_devices"`
}

type devicesAnswer struct {
	DriverVersion     string      `json:"driver_version"`
	CudaDriverVersion [2]int      `json:"cuda_driver_version"`
	Devices           []gpuDevice `json:"devices"`
}

func devices() (any, error) {
	nvmllib := nvml.New()
	manager := resource.NewNVMLManager(nvmllib, device.New(nvmllib))
	if err := manager.Init(); err != nil {
		return nil, fmt.Errorf("failed to initialize NVML: %v", err)
	}
	defer manager.Shutdown()
	var found devicesAnswer
	var err error
	if found.DriverVersion, err = manager.GetDriverVersion(); err != nil {
		return nil, fmt.Errorf("driver version: %v", err)
	}
	if found.CudaDriverVersion[0], found.CudaDriverVersion[1], err = manager.GetCudaDriverVersion(); err != nil {
		return nil, fmt.Errorf("CUDA driver version: %v", err)
	}
	gpus, err := manager.GetDevices()
	if err != nil {
		return nil, fmt.Errorf("devices: %v", err)
	}
	for index, gpu := range gpus {
		var d gpuDevice
		var err error
		if d.Name, err = gpu.GetName(); err != nil {
			return nil, fmt.Errorf("GPU %d name: %v", index, err)
		}
		if d.MemoryMiB, err = gpu.GetTotalMemoryMiB(); err != nil {
			return nil, fmt.Errorf("GPU %d memory: %v", index, err)
		}
		if d.ComputeCapability[0], d.ComputeCapability[1], err = gpu.GetCudaComputeCapability(); err != nil {
			return nil, fmt.Errorf("GPU %d compute capability: %v", index, err)
		}
		if d.MigCapable, err = gpu.IsMigCapable(); err != nil {
			return nil, fmt.Errorf("GPU %d MIG capability: %v", index, err)
		}
		if d.MigEnabled, err = gpu.IsMigEnabled(); err != nil {
			return nil, fmt.Errorf("GPU %d MIG mode: %v", index, err)
		}
		if d.PCIClass, err = gpu.GetPCIClass(); err != nil {
			return nil, fmt.Errorf("GPU %d PCI class: %v", index, err)
		}
		d.MigDevices = []migDevice{}
		if d.MigEnabled {
			migs, err := gpu.GetMigDevices()
			if err != nil {
				return nil, fmt.Errorf("GPU %d MIG devices: %v", index, err)
			}
			for _, mig := range migs {
				name, err := mig.GetName()
				if err != nil {
					return nil, fmt.Errorf("GPU %d MIG device name: %v", index, err)
				}
				attributes, err := mig.GetAttributes()
				if err != nil {
					return nil, fmt.Errorf("GPU %d MIG device %s attributes: %v", index, name, err)
				}
				d.MigDevices = append(d.MigDevices, migDevice{Name: name, Attributes: attributes})
			}
		}
		found.Devices = append(found.Devices, d)
	}
	return found, nil
}
