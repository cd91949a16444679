"""A LoRA SFT config in the layout of LLaMA-Factory's examples/train_lora/*.yaml, with our own values: the file a
user hands to `render`, `validate` and `run` as it is, or wraps in a recipe header."""

LORA_SFT = """\
### model
model_name_or_path: Qwen/Qwen2.5-0.5B-Instruct
trust_remote_code: true

### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all

### dataset
dataset: huanhuan
template: qwen
cutoff_len: 512
max_samples: 200
overwrite_cache: true
preprocessing_num_workers: 2

### output
output_dir: saves/qwen2.5-0.5b/lora/sft
logging_steps: 10
save_steps: 500
plot_loss: true
overwrite_output_dir: true
report_to: none  # choices: [none, wandb, tensorboard]

### train
per_device_train_batch_size: 2
gradient_accumulation_steps: 4
learning_rate: 2.0e-4
num_train_epochs: 2.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
ddp_timeout: 180000000
"""
