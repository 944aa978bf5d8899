# One process per rank, with torch.distributed's variables.
# The port: one the local supervisor found free when this job started.
export MASTER_ADDR=127.0.0.1 MASTER_PORT={{ rdzv_port }}
export WORLD_SIZE={{ nproc_per_node }} LOCAL_WORLD_SIZE={{ nproc_per_node }} GROUP_RANK=0
for ((rank = 0; rank < {{ nproc_per_node }}; rank++)); do
  RANK=$rank LOCAL_RANK=$rank {{ command }} &
  launch_pids+=("$!")
done
