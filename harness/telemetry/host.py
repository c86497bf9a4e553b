"""Host readings with psutil: CPU utilisation (this process and the system), memory, CPU
frequency and temperature where the machine exposes them."""

from __future__ import annotations

import os


class Host:
    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._proc = psutil.Process(os.getpid())
        # cpu_percent() measures since the previous call: prime both counters now.
        self._proc.cpu_percent(None)
        psutil.cpu_percent(None)
        self.unsupported: dict[str, str] = {}

    def _temp_c(self) -> float | None:
        if "cpu_temp" in self.unsupported:
            return None
        try:
            temps = self._psutil.sensors_temperatures()
        except (AttributeError, OSError) as e:
            self.unsupported["cpu_temp"] = f"sensors_temperatures failed: {e}"
            return None
        values = [t.current for name, entries in temps.items()
                  if name in ("coretemp", "k10temp", "zenpower", "cpu_thermal", "acpitz") for t in entries]
        if not values:
            self.unsupported["cpu_temp"] = "no CPU temperature sensor exposed"
            return None
        return max(values)

    def _freq_mhz(self) -> float | None:
        if "cpu_freq" in self.unsupported:
            return None
        try:
            f = self._psutil.cpu_freq()
        except (AttributeError, OSError, NotImplementedError) as e:
            f, why = None, str(e)
        else:
            why = "cpu_freq not exposed"
        if not f or not f.current:
            self.unsupported["cpu_freq"] = why
            return None
        return float(f.current)

    def read(self) -> dict:
        vm = self._psutil.virtual_memory()
        return {
            "proc_cpu_pct": self._proc.cpu_percent(None),
            "sys_cpu_pct": self._psutil.cpu_percent(None),
            "proc_rss_mib": self._proc.memory_info().rss / 2**20,
            "sys_mem_used_mib": (vm.total - vm.available) / 2**20,
            "cpu_freq_mhz": self._freq_mhz(),
            "cpu_temp_c": self._temp_c(),
        }
