using System.Text.Json;
using Nanoscale.Pipeline.Jinja;
using Nanoscale.Tests.Architecture;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Serve;

/// <summary>
/// Nanoscale's Jinja subset against Python's Jinja2 configured as transformers' <c>apply_chat_template</c> configures
/// it: <c>ChatTemplates/golden.json</c> holds Jinja2's output (<c>tools/chat_template_reference.py</c>) for the real
/// templates of Llama-3 and Qwen2.5 (read from ../shared) and three written for these tests, over conversations with
/// system prompts, tool turns, reasoning, Unicode, quotes and escapes, with and without tools.
/// </summary>
public class JinjaTemplateTests
{
    private static readonly DateTime Clock = new(2026, 12, 5, 9, 30, 0);

    private static string Folder => Path.Combine(ArchitectureRules.RepositoryRoot(), "tests", "Nanoscale.Tests", "Serve", "ChatTemplates");

    public static TheoryData<int> Cases()
    {
        var data = new TheoryData<int>();
        using var golden = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(Folder, "golden.json")));
        for (int k = 0; k < golden.RootElement.GetArrayLength(); k++) data.Add(k);
        return data;
    }

    private static string TemplateText(string name) => name.StartsWith("shared:", StringComparison.Ordinal)
        ? JsonDocument.Parse(File.ReadAllBytes(SharedData.Path("tokenizers", name["shared:".Length..], "tokenizer_config.json")))
            .RootElement.GetProperty("chat_template").GetString()!
        : File.ReadAllText(Path.Combine(Folder, name));

    [Theory]
    [MemberData(nameof(Cases))]
    public void RendersAsJinja2Does(int index)
    {
        using var golden = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(Folder, "golden.json")));
        var c = golden.RootElement[index];
        var template = JinjaTemplate.Parse(TemplateText(c.GetProperty("template").GetString()!));
        var variables = (OrderedDictionary<string, object?>)JinjaValues.FromJson(c.GetProperty("variables"))!;
        string label = $"{c.GetProperty("template")} on {c.GetProperty("conversation")}";
        if (c.TryGetProperty("error", out var error))
        {
            var e = Assert.Throws<JinjaException>(() => template.Render(variables.ToDictionary(), () => Clock));
            Assert.True(e.Raised, label);
            Assert.Equal(error.GetString(), e.Reason);
        }
        else Assert.Equal(c.GetProperty("expected").GetString(), template.Render(variables.ToDictionary(), () => Clock));
    }

    private static string Render(string template, object? messages = null) =>
        JinjaTemplate.Parse(template).Render(new Dictionary<string, object?> { ["messages"] = messages }, () => Clock);

    [Theory]
    [InlineData("{% if x %}", "'{% endif %}' expected", 1, 11)]
    [InlineData("a\n{{ x + }}", "unexpected '}}'", 2, 8)]
    [InlineData("{% for x in y %}{% endif %}", "'endif' is not a statement", 1, 20)]
    [InlineData("{{ 'open }}", "a string is not closed", 1, 4)]
    [InlineData("{% include 'other.jinja' %}", "'include' is not a statement", 1, 4)]
    [InlineData("{# never closed", "a comment is not closed", 1, 1)]
    [InlineData("{{ x $ y }}", "unexpected character '$'", 1, 6)]
    public void ParseErrorsNameTheirPlace(string template, string reason, int line, int column)
    {
        var e = Assert.Throws<JinjaException>(() => JinjaTemplate.Parse(template));
        Assert.Contains(reason, e.Reason);
        Assert.Equal((line, column), (e.Line, e.Column));
    }

    [Theory]
    [InlineData("{{ messages.x.y }}", "'dict object' has no attribute 'x' (reading '.y')")]
    [InlineData("{{ nothing | upper }}", "'nothing' is undefined (filter 'upper')")]
    [InlineData("{{ 'a' + 1 }}", "unsupported operand types for +: 'str' and 'int'")]
    [InlineData("{{ 1 // 0 }}", "division by zero")]
    [InlineData("{{ x | nosuchfilter }}", "no filter named 'nosuchfilter'")]
    [InlineData("{% set l = [1] %}{{ l.append(2) }}", "'list object' has no attribute 'append': it cannot be called")]
    [InlineData("{% set y.a = 1 %}", "'y' is not a namespace: only namespace(...) attributes can be set")]
    public void RenderErrorsSayWhatWentWrong(string template, string reason)
    {
        var e = Assert.Throws<JinjaException>(() => Render(template, new OrderedDictionary<string, object?>()));
        Assert.Equal(reason, e.Reason);
        Assert.False(e.Raised);
        Assert.Equal(1, e.Line);
    }

    [Fact]
    public void AHostileTemplateStopsAtItsLimits()
    {
        // Output, loop turns, macro recursion and nesting are all bounded: a template from a model's files cannot
        // hang the server, exhaust its memory or overflow its stack.
        Assert.Contains("more than", Assert.Throws<JinjaException>(() => Render("{% for i in range(1000000) %}{{ 'x' * 20 }}{% endfor %}")).Reason);
        Assert.Contains("more than", Assert.Throws<JinjaException>(() => Render("{% for i in range(3000) %}{% for j in range(3000) %}{% endfor %}{% endfor %}")).Reason);
        Assert.Contains("deep", Assert.Throws<JinjaException>(() => Render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")).Reason);
        Assert.Contains("nests deeper", Assert.Throws<JinjaException>(() => JinjaTemplate.Parse("{{ " + new string('(', 5000) + "1" + new string(')', 5000) + " }}")).Reason);
        Assert.Contains("nests deeper", Assert.Throws<JinjaException>(() => JinjaTemplate.Parse(string.Concat(Enumerable.Repeat("{% if x %}", 5000)))).Reason);
        Assert.Contains("longer than", Assert.Throws<JinjaException>(() => Render("{{ 'ab' * 100000000 }}")).Reason);
        Assert.Contains("more than", Assert.Throws<JinjaException>(() => Render("{{ range(100000000) | length }}")).Reason);
    }

    [Fact]
    public void RaiseExceptionIsMarkedAsTheTemplatesOwnMessage()
    {
        var e = Assert.Throws<JinjaException>(() => Render("{{ raise_exception('Roles must alternate') }}"));
        Assert.True(e.Raised);
        Assert.Equal("Roles must alternate", e.Reason);
    }

    [Theory]
    [InlineData(0.1, "0.1")]
    [InlineData(1.0, "1.0")]
    [InlineData(-2.5, "-2.5")]
    [InlineData(1e16, "1e+16")]
    [InlineData(1e15, "1000000000000000.0")]
    [InlineData(1.5e-5, "1.5e-05")]
    [InlineData(0.0001, "0.0001")]
    [InlineData(123456789012345678.0, "1.2345678901234568e+17")]
    [InlineData(double.NegativeInfinity, "-inf")]
    public void FloatsPrintAsPythonPrintsThem(double value, string text) => Assert.Equal(text, JinjaValues.PythonFloat(value));
}
