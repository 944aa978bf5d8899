# torchrun on this machine; it starts {{ nproc_per_node }} rank(s).
# --standalone: the rendezvous store listens on a port the kernel picks (localhost:0), so
# concurrent local runs never share one (the supervisor's free port is for `launcher: none`).
{{ python }} -m torch.distributed.run --standalone \
  --nnodes=1 --nproc-per-node={{ nproc_per_node }} --max-restarts={{ max_restarts }} \
  {{ launcher_args }} \
  {{ launcher_command }} &
launch_pids+=("$!")
