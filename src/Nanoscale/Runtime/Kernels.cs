using System.Numerics.Tensors;

namespace Nanoscale.Runtime;

/// <summary>The element-wise pieces of the forward pass (llama2.c run.c semantics).</summary>
internal static class Kernels
{
    /// <summary>o = w ⊙ x / sqrt(mean(x²) + eps).</summary>
    public static void RmsNorm(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, float eps, Span<float> destination)
    {
        float meanSquare = TensorPrimitives.SumOfSquares(x) / x.Length;
        float inverse = 1f / MathF.Sqrt(meanSquare + eps);
        TensorPrimitives.Multiply(x, inverse, destination);
        TensorPrimitives.Multiply(destination, weight, destination);
    }

    /// <summary>In-place softmax, shifted by the maximum for stability.</summary>
    public static void Softmax(Span<float> x)
    {
        float max = TensorPrimitives.Max(x);
        TensorPrimitives.Subtract(x, max, x);
        TensorPrimitives.Exp(x, x);
        float sum = TensorPrimitives.Sum(x);
        TensorPrimitives.Multiply(x, 1f / sum, x);
    }

    /// <summary>llama2.c / Meta RoPE: pair j is (2j, 2j + 1).</summary>
    public static void RopeInterleaved(Span<float> head, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin)
    {
        for (int j = 0; j < cos.Length; j++)
        {
            float v0 = head[2 * j], v1 = head[2 * j + 1];
            head[2 * j] = v0 * cos[j] - v1 * sin[j];
            head[2 * j + 1] = v0 * sin[j] + v1 * cos[j];
        }
    }

    /// <summary>Hugging Face RoPE (<c>rotate_half</c>): pair j is (j, j + headDim/2).</summary>
    public static void RopeHalves(Span<float> head, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin)
    {
        int half = cos.Length;
        for (int j = 0; j < half; j++)
        {
            float v0 = head[j], v1 = head[j + half];
            head[j] = v0 * cos[j] - v1 * sin[j];
            head[j + half] = v0 * sin[j] + v1 * cos[j];
        }
    }

    /// <summary>
    /// −log softmax(logits)[target], computed stably: max-shifted, exponentials summed in double.
    /// </summary>
    public static double NegativeLogLikelihood(ReadOnlySpan<float> logits, int target)
    {
        float max = TensorPrimitives.Max(logits);
        double sum = 0;
        for (int i = 0; i < logits.Length; i++) sum += Math.Exp(logits[i] - max);
        return Math.Log(sum) - (logits[target] - (double)max);
    }

    public static int ArgMax(ReadOnlySpan<float> x) => TensorPrimitives.IndexOfMax(x);
}
