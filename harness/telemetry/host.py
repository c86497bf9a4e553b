"""Host readings with psutil: CPU utilisation (this process and the system), memory, CPU
frequency and temperature where the machine exposes them."""

from __future__ import annotations

import os


class Host:
    """Readings of the host and of one process: this one, or the engine worker's (`watch`)."""

    def __init__(self, pid: int | None = None) -> None:
        import psutil

        self._psutil = psutil
        self.unsupported: dict[str, str] = {}
        self.watch(pid or os.getpid())
        psutil.cpu_percent(None)  # cpu_percent() measures since the previous call: prime it now

    def watch(self, pid: int) -> None:
        """Read process figures (CPU, RSS) of `pid` from now on."""
        self.pid = pid
        try:
            self._proc = self._psutil.Process(pid)
            self._proc.cpu_percent(None)
        except self._psutil.Error:
            self._proc = None

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
        cpu = rss = None
        if self._proc is not None:
            try:
                cpu, rss = self._proc.cpu_percent(None), self._proc.memory_info().rss / 2**20
            except self._psutil.Error:  # the process ended (an engine worker that died): no reading
                self._proc = None
        return {
            "proc_cpu_pct": cpu,
            "sys_cpu_pct": self._psutil.cpu_percent(None),
            "proc_rss_mib": rss,
            "sys_mem_used_mib": (vm.total - vm.available) / 2**20,
            "cpu_freq_mhz": self._freq_mhz(),
            "cpu_temp_c": self._temp_c(),
        }
