# One fault-tolerant launcher; it starts {{ nproc_per_node }} rank(s) and restarts them in place.
# --standalone: the rendezvous store listens on a port the kernel picks (localhost:0), so
# concurrent local runs never share one (the supervisor's free port is for `launcher: none`).
{{ python }} -m ftslurm.cli launch --standalone \
  --nnodes=1 --nproc-per-node={{ nproc_per_node }} \
  --max-restarts={{ max_restarts }} --shutdown-timeout={{ stop_grace }} \
  --ft-cfg-path={{ ft_config }} \
  {{ launcher_args }} \
  {{ launcher_command }} &
launch_pids+=("$!")
