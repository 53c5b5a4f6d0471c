using Nanoscale.Tensors;

namespace Nanoscale.Runtime;

/// <summary>A generated sequence: the prompt's tokens then the new ones, and its text.</summary>
/// <param name="Tokens">Prompt tokens (BOS included) followed by generated tokens.</param>
/// <param name="PromptTokens">How many of <paramref name="Tokens"/> came from the prompt.</param>
/// <param name="Text">The decoded text of all tokens.</param>
/// <param name="StoppedAtEnd">True when the model emitted EOS or BOS (llama2.c's sequence delimiter) before the limit.</param>
public sealed record GenerationResult(int[] Tokens, int PromptTokens, string Text, bool StoppedAtEnd);

/// <summary>Greedy decoding (argmax at each step), as llama2.c <c>run</c> with temperature 0.</summary>
public static class Generation
{
    /// <summary>
    /// Encodes <paramref name="prompt"/> with BOS (an empty prompt is just BOS), then appends the most likely token
    /// until <paramref name="maxNewTokens"/>, EOS/BOS, or the model's maximum sequence length.
    /// </summary>
    public static GenerationResult Greedy(LlamaModel model, ITokenizer tokenizer, string prompt, int maxNewTokens,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentOutOfRangeException.ThrowIfNegative(maxNewTokens);
        int[] promptTokens = tokenizer.Encode(prompt ?? "", addBos: tokenizer.BosId is not null);
        if (promptTokens.Length == 0)
            throw new InvalidOptionException("prompt", "it is empty and the tokenizer has no BOS token to start from");
        int capacity = Math.Min(model.Config.MaxSeqLen, promptTokens.Length + maxNewTokens);
        if (promptTokens.Length > capacity)
            throw new InvalidOptionException("prompt", $"it has {promptTokens.Length} tokens; the model holds {model.Config.MaxSeqLen}");

        InferenceSession session = model.CreateSession(Math.Max(1, capacity));
        var tokens = new List<int>(promptTokens);
        int vocab = model.Config.VocabSize;
        var logits = new float[promptTokens.Length * vocab];
        session.Forward(promptTokens, logits, cancellationToken);
        ReadOnlySpan<float> last = logits.AsSpan((promptTokens.Length - 1) * vocab, vocab);
        bool stopped = false;
        while (tokens.Count - promptTokens.Length < maxNewTokens)
        {
            int next = Kernels.ArgMax(last);
            if (next == tokenizer.EosId || next == tokenizer.BosId)
            {
                stopped = true;
                break;
            }
            tokens.Add(next);
            if (tokens.Count - promptTokens.Length == maxNewTokens || session.Length >= session.Capacity) break;
            cancellationToken.ThrowIfCancellationRequested();
            last = session.Step(next);
        }
        int[] all = [.. tokens];
        return new GenerationResult(all, promptTokens.Length, tokenizer.Decode(all), stopped);
    }
}
