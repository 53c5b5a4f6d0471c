using System.CommandLine;
using Nanoscale.Cli.Rendering;
using Nanoscale.Pipeline;
using Spectre.Console;

namespace Nanoscale.Cli.Commands;

/// <summary><c>nanoscale tokenize --tokenizer FILE|DIR --text FILE [--no-bos]</c>: token ids of a text as the
/// tokenizer's reference implementation gives them, from the file's exact bytes.</summary>
internal static class TokenizeCommand
{
    public static Command Create()
    {
        var tokenizer = new Option<string>("--tokenizer") { Description = "tokenizer.json (or its folder), SentencePiece .model, or llama2.c tokenizer.bin", Required = true };
        var text = new Option<string>("--text") { Description = "Text file (UTF-8), tokenized byte for byte", Required = true };
        var noBos = new Option<bool>("--no-bos") { Description = "Without the special tokens the tokenizer adds by default (BOS, a tokenizer.json's template)" };
        var json = CliRunner.JsonOption();
        var command = new Command("tokenize", "Token ids of a text file") { tokenizer, text, noBos, json };
        command.SetAction(parse => CliRunner.Run(parse, json, context =>
        {
            var result = Tokenization.Tokenize(parse.GetValue(tokenizer)!, parse.GetValue(text)!, specialTokens: !parse.GetValue(noBos));
            if (context.Json)
                return new { tokenizer = result.Tokenizer, text = result.Text, special_tokens = result.SpecialTokens, count = result.Ids.Length, ids = result.Ids, bos_id = result.BosId, eos_id = result.EosId };
            Terminal.Out.WriteLine($"{result.Ids.Length} tokens");
            Terminal.Out.WriteLine(string.Join(' ', result.Ids));
            return null;
        }));
        return command;
    }
}
