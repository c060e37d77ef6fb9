"""Running the project on a Ray cluster (the optional ``ray`` extra).

Nothing outside this folder imports Ray. This layer sits above ``batch`` and ``training``: it
imports them, they never import it. The caller (the CLI, a script) builds a Ray executor here,
``ray_batch.RayExecutor`` or ``ray_features.RayFeatureExecutor``, and passes it in.
"""
