module simcluster.invalid/nvml

go 1.25.0
