"""GPU (NVML) and host telemetry. Only `telemetry/nvml.py` imports pynvml."""
