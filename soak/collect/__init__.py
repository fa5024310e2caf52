"""The collector: samples each target's process and /health into the run directory.

It runs as a plain process of its own (`python -m soak.collect`, for `soak run`)
or inside `soak collect`, so a saturated load generator cannot delay it, and it
can watch a server that someone else is loading. Modules: collector (the loops),
process (psutil + /proc samples, finding the process), health (/health polls),
spawn (targets soak starts), forensics (py-spy dumps), metrics (Prometheus);
for targets on other machines: wire (the protocol), receiver (in soak run),
shipper (in soak collect --join) and importer (both, and soak merge).
"""
