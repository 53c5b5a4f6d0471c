namespace Nanoscale.Runtime;

/// <summary>Hugging Face Llama tensor names, the names every <see cref="IO.ICheckpoint"/> uses.</summary>
internal static class LlamaTensorNames
{
    public const string Embedding = "model.embed_tokens.weight";
    public const string FinalNorm = "model.norm.weight";
    public const string OutputHead = "lm_head.weight";

    public static string AttentionNorm(int layer) => $"model.layers.{layer}.input_layernorm.weight";
    public static string Query(int layer) => $"model.layers.{layer}.self_attn.q_proj.weight";
    public static string Key(int layer) => $"model.layers.{layer}.self_attn.k_proj.weight";
    public static string Value(int layer) => $"model.layers.{layer}.self_attn.v_proj.weight";
    public static string QueryBias(int layer) => $"model.layers.{layer}.self_attn.q_proj.bias";
    public static string KeyBias(int layer) => $"model.layers.{layer}.self_attn.k_proj.bias";
    public static string ValueBias(int layer) => $"model.layers.{layer}.self_attn.v_proj.bias";
    public static string Output(int layer) => $"model.layers.{layer}.self_attn.o_proj.weight";
    public static string QueryNorm(int layer) => $"model.layers.{layer}.self_attn.q_norm.weight";
    public static string KeyNorm(int layer) => $"model.layers.{layer}.self_attn.k_norm.weight";
    public static string FfnNorm(int layer) => $"model.layers.{layer}.post_attention_layernorm.weight";
    public static string Gate(int layer) => $"model.layers.{layer}.mlp.gate_proj.weight";
    public static string Up(int layer) => $"model.layers.{layer}.mlp.up_proj.weight";
    public static string Down(int layer) => $"model.layers.{layer}.mlp.down_proj.weight";
}
