"""The model packages: `kokoro`, `csm` and `mimi` (CSM's codec), each with the same contract, which
`mlx_tts.utils.load_model` dispatches on:

- `ModelArgs` (`ModelArgs.from_dict(config)`) and `Model(args)`;
- `is_config(config)`: whether a config.json is this model's;
- `convert(src, dst)`: a checkpoint folder in any layout the package reads -> an MLX-layout folder
  (config.json with `"layout": "mlx"`, model.safetensors, side files), written once;
- `Model.sanitize(weights)`: the weights of a published layout -> this model's names and shapes (what `convert`
  saves). Kokoro's is static and reads hexgrad's PyTorch layout (`sanitize_mlx_audio` reads MLX-Audio's, which
  only the config tells apart, see `kokoro.convert.detect_layout`); CSM's and Mimi's tell their layouts apart
  from the weights' names.
"""
