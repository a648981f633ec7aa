"""The training library: the sharded train step (+ GradCache), the Gecko loss, optimisers,
mesh and logical-axis rules, orbax checkpoints and the trainer's pieces. Imports
`gecko.data` and `gecko.models`, nothing above them."""
