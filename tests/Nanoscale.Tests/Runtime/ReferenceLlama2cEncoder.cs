using System.Text;
using Nanoscale.Runtime;

namespace Nanoscale.Tests.Runtime;

/// <summary>llama2.c <c>encode</c> as written: rescan all pairs after every merge (O(n²)), best score, leftmost on ties.</summary>
internal static class ReferenceLlama2cEncoder
{
    public static int[] Encode(Llama2cTokenizer tokenizer, string text, bool bos)
    {
        var byString = new Dictionary<string, int>();
        for (int id = 0; id < tokenizer.VocabSize; id++) byString.TryAdd(Encoding.Latin1.GetString(tokenizer.Piece(id)), id);
        var tokens = new List<int>();
        var isByte = new List<bool>();
        if (bos) { tokens.Add(1); isByte.Add(true); } // BOS never merges either
        if (text.Length > 0) { tokens.Add(byString[" "]); isByte.Add(false); }
        byte[] utf8 = Encoding.UTF8.GetBytes(text);
        for (int i = 0; i < utf8.Length;)
        {
            int len = 1;
            while (i + len < utf8.Length && (utf8[i + len] & 0xC0) == 0x80 && len < 4) len++;
            string key = Encoding.Latin1.GetString(utf8, i, len);
            if (byString.TryGetValue(key, out int id)) { tokens.Add(id); isByte.Add(false); }
            else for (int j = 0; j < len; j++) { tokens.Add(utf8[i + j] + 3); isByte.Add(true); }
            i += len;
        }
        while (true)
        {
            float best = -1e10f;
            int bestId = -1, bestIdx = -1;
            for (int i = 0; i + 1 < tokens.Count; i++)
            {
                if (isByte[i] || isByte[i + 1]) continue;
                string merged = Encoding.Latin1.GetString(tokenizer.Piece(tokens[i])) + Encoding.Latin1.GetString(tokenizer.Piece(tokens[i + 1]));
                if (byString.TryGetValue(merged, out int id) && tokenizer.Score(id) > best)
                {
                    best = tokenizer.Score(id);
                    bestId = id;
                    bestIdx = i;
                }
            }
            if (bestIdx == -1) break;
            tokens[bestIdx] = bestId;
            tokens.RemoveAt(bestIdx + 1);
            isByte.RemoveAt(bestIdx + 1);
        }
        return [.. tokens];
    }
}
