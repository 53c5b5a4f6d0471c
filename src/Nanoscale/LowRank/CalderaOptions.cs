using Nanoscale.Tensors;

namespace Nanoscale.LowRank;

/// <summary>What a CALDERA decomposition uses (SPEC §11); the spec string <c>caldera:rank=K,q=…,lr=…</c> builds it.</summary>
internal sealed record CalderaOptions
{
    /// <summary>k: columns of L, rows of R. 0 gives LDLQ alone (Q only).</summary>
    public int Rank { get; init; } = 16;

    /// <summary>Grid of the backbone Q (LDLQ with H).</summary>
    public required QuantGrid Q { get; init; }

    /// <summary>Grid of the factors: Lᵀ (round to nearest) and R (LDLQ with H).</summary>
    public required QuantGrid LowRank { get; init; }

    /// <summary>Outer iterations (Q step, then LR step); the best iterate is kept.</summary>
    public int Iterations { get; init; } = 20;

    /// <summary>Least-squares rounds of the LR step after its SVD start (L with R fixed, then R with L fixed).</summary>
    public int LowRankRounds { get; init; } = 3;

    /// <summary>Threads for LDLQ's rows (default: every core).</summary>
    public Parallelism Parallelism { get; init; }

    /// <summary>Input-side incoherence transform (<see cref="IncoherenceTransform"/>; spec key <c>had</c>).</summary>
    public bool Hadamard { get; init; }

    /// <summary>Q's LDLQ in act-order (<see cref="Ldlq.Quantize"/>; spec key <c>actorder</c>).</summary>
    public bool ActOrder { get; init; }

    /// <summary>Seed for the randomized range finder of large SVDs (results are reproducible for a given seed).</summary>
    public int Seed { get; init; } = 1;
}
